"""dense_norm: exact, power and Gram iteration against singular values from torch.linalg."""

from __future__ import annotations

import pytest
import torch

from lipcert.errors import BadInputError, LipcertError
from lipcert.linalg import DENSE_METHODS, PowerIterationState, dense_norm


def _matrix(rows=30, cols=20, seed=0, dtype=torch.float64):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (1, 7), (7, 1), (16, 16)])
def test_gram_is_the_schatten_norm_and_decreases(shape):
    weight = _matrix(*shape)
    singular = torch.linalg.svdvals(weight)
    previous = float("inf")
    for steps in range(8):
        bound = dense_norm(weight, "gram", n_iter=steps)
        p = 2.0 ** (steps + 1)
        schatten = float((singular**p).sum() ** (1 / p))
        assert float(bound) == pytest.approx(schatten, rel=1e-9)
        assert float(singular[0]) * (1 - 1e-12) <= float(bound) <= previous * (1 + 1e-12)
        assert bound.guarantee == "upper" and bound.iterations == steps
        previous = float(bound)


def test_exact_and_power_against_svd():
    weight = _matrix()
    sigma = float(torch.linalg.svdvals(weight)[0])
    exact = dense_norm(weight, "exact")
    assert exact.guarantee == "exact" and float(exact) == pytest.approx(sigma, rel=1e-12)
    power = dense_norm(weight, "power", n_iter=500, seed=3)
    assert power.guarantee == "estimate"
    assert sigma * (1 - 1e-6) <= float(power) <= sigma * (1 + 1e-12)
    assert dense_norm(weight).method == "gram"
    assert set(DENSE_METHODS) == {"exact", "power", "gram"}


def test_power_state_persists_across_calls():
    weight = _matrix(40, 25)
    sigma = float(torch.linalg.svdvals(weight)[0])
    state = PowerIterationState((25,), seed=1, dtype=torch.float64)
    values = [float(dense_norm(weight, "power", n_iter=5, state=state)) for _ in range(60)]
    assert int(state.steps) == 300
    assert values[-1] == pytest.approx(sigma, rel=1e-6)
    assert all(v <= sigma * (1 + 1e-12) for v in values)
    restored = PowerIterationState((25,), seed=7, dtype=torch.float64)
    restored.load_state_dict(state.state_dict())
    assert float(dense_norm(weight, "power", n_iter=0, state=restored)) == pytest.approx(
        sigma, rel=1e-6
    )
    with pytest.raises(BadInputError):
        dense_norm(weight, "power", state=PowerIterationState((24,)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_gram_has_no_overflow_or_underflow(dtype, scale):
    weight = _matrix(12, 9)
    sigma = float(torch.linalg.svdvals(weight)[0])
    bound = dense_norm((weight * scale).to(dtype), "gram", n_iter=12)
    assert torch.isfinite(bound.value)
    assert float(bound) == pytest.approx(sigma * scale, rel=1e-4)


def test_zero_matrix_gives_zero_with_finite_gradient():
    weight = torch.zeros(5, 4, dtype=torch.float64, requires_grad=True)
    bound = dense_norm(weight, "gram")
    bound.value.backward()
    assert float(bound) == 0.0 and torch.isfinite(weight.grad).all()


def test_gradients_match_finite_differences():
    weight = _matrix(6, 4).requires_grad_(True)
    for method in ("exact", "gram"):
        assert torch.autograd.gradcheck(lambda w, m=method: dense_norm(w, m).value, (weight,))
    # the gradient of the norm is u1 v1^T
    dense_norm(weight, "gram", n_iter=12).value.backward()
    u, _, vh = torch.linalg.svd(weight.detach())
    assert torch.allclose(weight.grad, torch.outer(u[:, 0], vh[0]), atol=1e-8)


@pytest.mark.parametrize(
    "weight,kwargs",
    [
        (torch.tensor([[1.0, float("nan")]]), {}),
        (torch.tensor([[1.0, float("inf")]]), {}),
        (torch.ones(2, 2, 2), {}),
        (torch.ones(3), {}),
        (torch.ones(2, 2), {"method": "svd"}),
        (torch.ones(2, 2), {"method": "gram", "n_iter": -1}),
        (torch.ones(2, 2), {"method": "gram", "tol": 1e-3}),
        (torch.ones(2, 2, dtype=torch.long), {}),
    ],
)
def test_bad_input_raises(weight, kwargs):
    with pytest.raises(LipcertError):
        dense_norm(weight, **kwargs)
