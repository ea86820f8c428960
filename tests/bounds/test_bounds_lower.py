"""lipschitz_lower_bound: attained, below the upper bound, seeded."""

from __future__ import annotations

import json

import pytest
import torch
from bounds_oracles import jacobian_norms
from torch import nn

from lipcert.bounds import lipschitz_bound, lipschitz_lower_bound
from lipcert.errors import BadInputError


def test_linear_map_lower_bound_reaches_the_spectral_norm():
    torch.manual_seed(0)
    layer = nn.Linear(9, 6)
    exact = float(torch.linalg.svdvals(layer.weight.detach())[0])
    lower = lipschitz_lower_bound(layer, torch.randn(4, 9), steps=60, seed=3)
    assert exact * 0.999 <= lower <= exact * (1 + 1e-9)


def test_lower_bound_is_attained_on_a_smooth_network():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
    starts = torch.randn(16, 3)
    lower = lipschitz_lower_bound(model, starts, steps=40, seed=0)
    upper = float(lipschitz_bound(model, starts[:1]))
    assert lower <= upper
    # at least as good as the best explicit Jacobian among the starting points
    assert lower >= float(jacobian_norms(model, starts).max()) * (1 - 1e-9)
    # never above the largest Jacobian norm on a dense grid of the region it explored
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-6, 6, 21)] * 3, indexing="ij"), -1)
    assert lower <= float(jacobian_norms(model, grid.reshape(-1, 3)).max()) * 1.05


def test_seeded_and_deterministic():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 4)
    first = lipschitz_lower_bound(model, x, steps=10, seed=7)
    assert first == lipschitz_lower_bound(model, x, steps=10, seed=7)


def test_bad_arguments():
    with pytest.raises(BadInputError):
        lipschitz_lower_bound(nn.Linear(2, 2), torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(BadInputError):
        lipschitz_lower_bound(nn.Linear(2, 2), torch.randn(3, 2), steps=0)
    with pytest.raises(BadInputError, match="eval"):
        lipschitz_lower_bound(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), torch.randn(3, 2))


def test_lower_bound_carries_its_guarantee_and_reads_as_a_float():
    from lipcert.bounds import LowerBound

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).double()
    lower = lipschitz_lower_bound(model, torch.randn(4, 5, dtype=torch.float64), steps=30)
    exact = float(torch.linalg.matrix_norm(model[0].weight, ord=2))
    assert isinstance(lower, LowerBound) and isinstance(lower, float)
    assert lower.guarantee == "lower" and lower.steps == 30 and "ascent" in lower.method
    assert lower <= exact * (1 + 1e-9) and lower == pytest.approx(exact, rel=1e-6)
    assert "guarantee='lower'" in repr(lower)
    assert json.loads(json.dumps({"lower": lower}))["lower"] == float(lower)
