"""Independent oracles for the operator-norm tests: explicit matrices and their SVD."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def explicit_conv_matrix(
    kernel: torch.Tensor, input_size: int, stride: int, padding, padding_mode: str
) -> torch.Tensor:
    """Matrix of the torch convolution layer (float64), built column by column from basis inputs."""
    dims = kernel.dim() - 2
    layer_type = nn.Conv1d if dims == 1 else nn.Conv2d
    layer = layer_type(
        kernel.shape[1],
        kernel.shape[0],
        tuple(kernel.shape[2:]),
        stride=stride,
        padding=padding,
        padding_mode=padding_mode,
        bias=False,
    ).double()
    with torch.no_grad():
        layer.weight.copy_(kernel.double())
        size = kernel.shape[1] * input_size**dims
        basis = torch.eye(size, dtype=torch.float64).reshape(
            size, kernel.shape[1], *(input_size,) * dims
        )
        return layer(basis).reshape(size, -1).T


def explicit_conv_norm(kernel, input_size, stride, padding, padding_mode) -> float:
    """Largest singular value of :func:`explicit_conv_matrix`."""
    matrix = explicit_conv_matrix(kernel, input_size, stride, padding, padding_mode)
    return float(torch.linalg.svdvals(matrix)[0])


def check_guarantee(bound, truth: float, rtol: float = 1e-6) -> None:
    """Assert that a NormBound keeps its promise against the true norm."""
    value = float(bound)
    slack = rtol * truth + 1e-12
    if bound.guarantee == "exact":
        assert abs(value - truth) <= slack, (bound, truth)
    elif bound.guarantee == "upper":
        assert value >= truth - slack, (bound, truth)
    else:
        assert value <= truth + slack, (bound, truth)


@pytest.fixture
def conv_oracle():
    return explicit_conv_norm


@pytest.fixture
def guarantee_check():
    return check_guarantee



@pytest.fixture
def conv_matrix():
    return explicit_conv_matrix
