"""Independent oracles for the layer tests: explicit Jacobians and their spectral norms."""

from __future__ import annotations

import pytest
import torch


def _max_jacobian_norm(layer: torch.nn.Module, sample_shape: tuple[int, ...], n_points: int = 24,
                       seed: int = 0) -> float:
    """Largest spectral norm of the explicit Jacobian (torch.func.jacrev, float64) of ``layer``
    over ``n_points`` random inputs of shape ``sample_shape`` at several scales."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.05, 0.3, 1.0, 3.0], dtype=torch.float64).repeat(n_points)[:n_points]
    points = torch.randn((n_points, *sample_shape), generator=generator, dtype=torch.float64)
    points = points * scales.view(-1, *([1] * len(sample_shape)))
    with torch.no_grad():
        layer(points)  # fills caches outside the functional transforms

    def single(x: torch.Tensor) -> torch.Tensor:
        return layer(x.unsqueeze(0)).squeeze(0)

    jacobians = torch.func.vmap(torch.func.jacrev(single))(points).detach()
    jacobians = jacobians.reshape(n_points, -1, points[0].numel())
    return float(torch.linalg.matrix_norm(jacobians, ord=2).max())


def _explicit_matrix(fn, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a linear map ``fn`` (batched input) from the images of the basis vectors."""
    size = int(torch.tensor(sample_shape).prod())
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *sample_shape)
    return fn(basis).reshape(size, -1).T


@pytest.fixture
def jacobian_norm():
    return _max_jacobian_norm


@pytest.fixture
def explicit_matrix():
    return _explicit_matrix
