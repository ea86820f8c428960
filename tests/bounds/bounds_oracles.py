"""Independent oracles for the bound tests: explicit Jacobians and explicit linear maps."""

from __future__ import annotations

import math

import torch
from torch.func import jvp


def jacobian_norms(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Spectral norm of the explicit Jacobian of ``model`` (one sample) at each point.

    The Jacobian columns are forward-mode derivatives along every basis vector, computed for
    all points in one batched call.
    """
    count, shape = points.shape[0], points.shape[1:]
    size = math.prod(shape)
    basis = torch.eye(size, dtype=points.dtype).reshape(size, *shape)
    inputs = points.repeat_interleave(size, dim=0)
    _, columns = jvp(model, (inputs,), (basis.repeat(count, *([1] * len(shape))),))
    jacobians = columns.reshape(count, size, -1).transpose(1, 2)
    return torch.linalg.matrix_norm(jacobians, ord=2)


def explicit_matrix(linear_map, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a linear map of one sample, built column by column from basis vectors."""
    size = math.prod(input_shape)
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *input_shape)
    return linear_map(basis).reshape(size, -1).T
