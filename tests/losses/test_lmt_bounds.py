"""LMT's bounds come from lipcert.bounds and are sound, differentiable inputs to the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcert.errors import UnsupportedLayerError
from lipcert.losses import LMTLoss


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)).double()


def test_pairwise_bound_is_body_norm_times_row_distances():
    model = mlp()
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    pair = LMTLoss(0.1, pairwise=True).bound(model, x)
    body = torch.linalg.svdvals(model[1].weight.detach())[0]
    rows = model[3].weight.detach()
    expected = body * torch.cdist(rows, rows)
    torch.testing.assert_close(pair.detach(), expected, rtol=1e-6, atol=1e-9)


def test_pairwise_bound_holds_for_the_jacobian_of_every_margin():
    model = mlp()
    pair = LMTLoss(0.1, pairwise=True).bound(model, torch.rand(1, 1, 3, 4, dtype=torch.float64))
    for point in torch.rand(20, 1, 3, 4, dtype=torch.float64, generator=torch.Generator()
                            .manual_seed(1)):
        jac = torch.func.jacrev(lambda v: model(v[None])[0])(point).reshape(4, -1)
        for i in range(4):
            for j in range(4):
                slope = torch.linalg.vector_norm(jac[i] - jac[j])
                assert float(slope) <= float(pair[i, j]) * (1 + 1e-9)


def test_global_bound_bounds_the_jacobian_and_has_gradients():
    model = mlp()
    x = torch.rand(2, 1, 3, 4, dtype=torch.float64)
    bound = LMTLoss(0.1).bound(model, x)
    jac = torch.func.jacrev(lambda v: model(v[None])[0])(x[0]).reshape(4, -1)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) <= float(bound)
    loss = LMTLoss(0.5)(model(x), torch.tensor([0, 1]), bound)
    loss.backward()
    assert model[1].weight.grad is not None and model[1].weight.grad.abs().sum() > 0


def test_larger_eps_gives_a_larger_loss():
    model = mlp()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3])
    values = []
    for eps in (0.0, 0.5, 2.0):
        loss = LMTLoss(eps, pairwise=True)
        values.append(float(loss(model(x), target, loss.bound(model, x)).detach()))
    assert values[0] < values[1] < values[2]


def test_pairwise_needs_a_final_linear_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU()).double()
    with pytest.raises(UnsupportedLayerError, match="LMT\\+\\+"):
        LMTLoss(0.1, pairwise=True).bound(model, torch.rand(1, 1, 3, 4, dtype=torch.float64))
