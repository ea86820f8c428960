"""What lipschitz_bound tells the caller: errors in terms of the caller's input (its shape and
batch size, not the probe batch lipcert traces with) and in one line (no torch.fx node dump);
table rows whose bound and method say what each node contributes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcert import models
from lipcert.bounds import lipschitz_bound, register_rule
from lipcert.bounds.graph import PROBE_BATCH
from lipcert.errors import BadInputError


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(10, 4), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_a_model_failing_on_the_input_is_a_one_line_error_with_the_callers_batch():
    with pytest.raises(BadInputError) as caught:
        lipschitz_bound(TwoLinear(), torch.rand(32, 10))
    message = str(caught.value)
    assert "TwoLinear fails on the example input of shape (32, 10)" in message
    assert "32x4 and 5x2" in message  # the model's own error, at the caller's batch size
    assert "\n" not in message


@pytest.mark.parametrize("shape, expected", [
    ((32, 28, 28), "got (32, 28, 28)"),          # the input itself (channel dim missing)
    ((32, 1, 32, 32), "input_shape (32, 1024)"),  # an intermediate shape
    ((1, 1, 32, 32), "input_shape (1, 1024)"),
])
def test_rule_errors_name_the_callers_batch_size(shape, expected):
    assert PROBE_BATCH not in (32, 1)
    model = models.build("sll-s").eval()
    with pytest.raises(BadInputError) as caught:
        lipschitz_bound(model, torch.rand(*shape))
    message = str(caught.value)
    assert expected in message
    assert f"({PROBE_BATCH}, " not in message


class Picky(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fx_context_is_stripped_from_lipcert_errors():
    def rule(module, input_shape):
        raise BadInputError("Picky: no.\n\nWhile executing %picky : [num_users=1] = "
                            "call_module[target=picky]\nOriginal traceback: ...")

    register_rule(Picky, rule)
    model = nn.Sequential(nn.Linear(3, 3), Picky())
    with pytest.raises(BadInputError) as caught:
        lipschitz_bound(model, torch.rand(5, 3))
    assert str(caught.value) == "Picky: no."


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem, self.branch, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(h + self.branch(torch.relu(h)))


def test_a_residual_add_row_shows_its_own_factor_not_the_running_product():
    model = Residual().double()
    report = lipschitz_bound(model, torch.rand(3, 4, dtype=torch.float64))
    rows = {row.name: row for row in report.layers}
    branch = float(torch.linalg.matrix_norm(model.branch.weight, ord=2))
    stem = float(torch.linalg.matrix_norm(model.stem.weight, ord=2))
    add = rows["add"]
    assert add.bound == pytest.approx(1 + branch, rel=1e-9)  # over the fork 'stem'
    assert add.running == pytest.approx(stem * (1 + branch), rel=1e-9)
    assert "over 'stem'" in add.method


def test_table_methods_name_what_they_compute():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 36, 3))
    report = lipschitz_bound(model, torch.rand(2, 1, 6, 6))
    conv, _, linear = report.layers
    assert (conv.guarantee, conv.method) == ("upper", "frequency svd, circular embedding")
    assert (linear.guarantee, linear.method) == ("exact", "svd")
    circular = nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular")
    row = lipschitz_bound(nn.Sequential(circular), torch.rand(2, 1, 6, 6)).layers[0]
    assert (row.guarantee, row.method) == ("exact", "frequency svd")
