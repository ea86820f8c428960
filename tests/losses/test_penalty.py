"""lipschitz_penalty: the product of sound layer bounds, differentiable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.losses import lipschitz_penalty


def explicit_conv_matrix(conv: nn.Conv2d, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of the convolution's linear part, column by column from basis images."""
    size = int(torch.tensor(shape).prod())
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    with torch.no_grad():
        out = nn.functional.conv2d(basis, conv.weight.double(), None, conv.stride, conv.padding)
    return out.reshape(size, -1).T


@pytest.mark.parametrize("method", ["gram", "toeplitz"])
def test_penalty_bounds_the_product_of_exact_layer_norms(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 10)
    ).double()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    conv_exact = torch.linalg.svdvals(explicit_conv_matrix(model[0], (1, 6, 6)))[0]
    dense_exact = torch.linalg.svdvals(model[3].weight)[0]
    exact = float((conv_exact * dense_exact).detach())
    value = lipschitz_penalty(model, x, method)
    assert float(value.detach()) >= exact * (1 - 1e-9)
    assert float(value.detach()) <= exact * 3.0  # a useful bound, not a blow-up
    value.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_penalty_rejects_unknown_methods_and_models_without_linear_layers():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(BadInputError, match="penalty method"):
        lipschitz_penalty(model, torch.rand(1, 4), "spectral")
    with pytest.raises(BadInputError, match="no nn.Linear"):
        lipschitz_penalty(nn.ReLU(), torch.rand(1, 4))
