"""Errors of lipschitz_bound speak of the caller's input: its shape and batch size, not those
of the probe batch lipcert traces with, and in one line (no torch.fx node dump)."""

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
