"""Every unsupported or unsound case raises a LipcertError; nothing is skipped silently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipcert.bounds import lipschitz_bound, register_rule
from lipcert.errors import (
    BadInputError,
    LipcertError,
    UnsoundRequestError,
    UnsupportedLayerError,
)
from lipcert.linalg import NormBound


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _wrap(fn) -> nn.Module:
    """A model that applies a linear layer, then ``fn``: the traced graph calls ``fn``."""
    return nn.Sequential(nn.Linear(4, 4), Lambda(fn))


def test_unsupported_module_names_its_path_and_the_fix():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Softmax(dim=1)))
    with pytest.raises(UnsupportedLayerError, match=r"'1\.1'.*Softmax.*register_rule"):
        lipschitz_bound(model, torch.rand(2, 4))


@pytest.mark.parametrize("fn, pattern", [
    (lambda x: x * x, "two input-dependent"),
    (lambda x: x.mean(0, keepdim=True).expand_as(x), "batch"),
    (lambda x: torch.cat([x, x], dim=0)[:2], "batch"),
    (lambda x: x.transpose(0, 1), "batch"),
    (lambda x: x[0:1], "batch"),
    (lambda x: x[:, torch.tensor([0, 0, 1])], "slices"),
    (lambda x: torch.sort(x, dim=1).indices * 1.0, "indices"),  # .values has a rule
    (lambda x: torch.sort(x, dim=0).values, "batch"),
    (lambda x: x / x.norm(dim=1, keepdim=True), "no Lipschitz rule"),
    (lambda x: F.dropout(x, 0.5), "training=True"),
    (lambda x: x.floor(), "no Lipschitz rule"),
    (lambda x: x.view(-1), "batch"),
])
def test_unsupported_operations(fn, pattern):
    with pytest.raises(UnsupportedLayerError, match=pattern):
        lipschitz_bound(_wrap(fn), torch.rand(2, 4))


def test_training_mode_batch_norm_and_dropout_are_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    with pytest.raises(UnsupportedLayerError, match=r"'1' is in training mode"):
        lipschitz_bound(model, torch.rand(2, 3))
    assert int(model[1].num_batches_tracked) == 0  # refused before running the example
    with pytest.raises(UnsupportedLayerError, match="training mode"):
        lipschitz_bound(nn.Sequential(nn.Linear(3, 3), nn.Dropout()).train(), torch.rand(2, 3))
    no_stats = nn.BatchNorm1d(3, track_running_stats=False).eval()
    with pytest.raises(UnsupportedLayerError, match="running statistics"):
        lipschitz_bound(no_stats, torch.rand(2, 3))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_weights(value):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].weight[0, 1] = value
    with pytest.raises(BadInputError, match=r"2\.weight.*NaN or Inf"):
        lipschitz_bound(model, torch.rand(2, 3))


def test_nan_input_and_non_tensor_input():
    with pytest.raises(BadInputError):
        lipschitz_bound(nn.Linear(2, 2), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(BadInputError):
        lipschitz_bound(nn.Linear(2, 2), [[0.0, 1.0]])


@pytest.mark.parametrize("fn", [
    lambda x: (x, x),
    lambda x: {"logits": x},
    lambda x: x.argmax(dim=1),
    lambda x: x > 0,
])
def test_outputs_that_are_not_a_batch_of_tensors(fn):
    with pytest.raises(LipcertError):
        lipschitz_bound(_wrap(fn), torch.rand(2, 4))


def test_output_that_does_not_depend_on_the_input():
    bias = torch.ones(2, 3)
    with pytest.raises(BadInputError, match="does not depend"):
        lipschitz_bound(Lambda(lambda x: bias), torch.rand(2, 3))


class Custom(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1).values


def test_rules_that_return_estimates_or_wrong_types_are_refused():
    register_rule(Custom, lambda m, s: NormBound(torch.tensor(1.0), "estimate", "power"))
    with pytest.raises(UnsoundRequestError, match="estimate"):
        lipschitz_bound(nn.Sequential(Custom()), torch.rand(2, 3))
    register_rule(Custom, lambda m, s: 1.0)
    with pytest.raises(BadInputError, match="NormBound"):
        lipschitz_bound(nn.Sequential(Custom()), torch.rand(2, 3))
    register_rule(Custom, lambda m, s: NormBound(torch.tensor(1.0), "exact", "sort"))
    assert float(lipschitz_bound(nn.Sequential(Custom()), torch.rand(2, 3))) == 1.0
    with pytest.raises(BadInputError):
        register_rule(int, lambda m, s: None)


def test_forward_hooks_are_refused():
    layer = nn.Linear(3, 3)
    layer.register_forward_hook(lambda module, inputs, output: output * 100)
    with pytest.raises(UnsupportedLayerError, match="hooks"):
        lipschitz_bound(nn.Sequential(layer), torch.rand(2, 3))


def test_forward_with_required_extra_argument():
    class TwoInputs(nn.Module):
        def forward(self, x, mask):
            return x * mask

    with pytest.raises(BadInputError, match="mask"):
        lipschitz_bound(TwoInputs(), torch.rand(2, 3))


class Checked(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, layers, reverse=False):
        super().__init__()
        self.layers, self.reverse = nn.ModuleList(layers), reverse

    def forward(self, x):
        if x.abs().max() > 1e9:
            raise ValueError("input out of range")
        for layer in (reversed(self.layers) if self.reverse else self.layers):
            x = layer(x)
        return x


def test_untraceable_model_falls_back_to_children_in_order_and_says_so():
    model = Checked([nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)])
    with pytest.warns(UserWarning, match="registration order"):
        report = lipschitz_bound(model, torch.rand(2, 3))
    assert not report.traced and "fx tracing failed" in str(report)
    norms = [torch.linalg.matrix_norm(model.layers[i].weight, ord=2) for i in (0, 2)]
    assert float(report) == pytest.approx(float(norms[0] * norms[1]))


def test_fallback_refuses_when_children_in_order_do_not_reproduce_the_model():
    model = Checked([nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)], reverse=True)
    with pytest.raises(LipcertError):
        lipschitz_bound(model, torch.rand(2, 3))
