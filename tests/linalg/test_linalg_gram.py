"""The shared Gram-iteration helper on batches of real and complex matrices."""

from __future__ import annotations

import pytest
import torch

from lipcert.linalg import dense_norm
from lipcert.linalg.gram import gram_iterate, gram_power_lower_bound, gram_schatten_bound


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(7, 5, 3), (4, 3, 6), (2, 3, 1, 4)])
def test_batched_bounds_bracket_the_largest_singular_value(dtype, shape):
    generator = torch.Generator().manual_seed(0)
    mats = torch.randn(shape, generator=generator, dtype=dtype)
    sigma = torch.linalg.svdvals(mats)[..., 0]
    for steps in (1, 3, 6):
        gram, log_scale = gram_iterate(mats, steps)
        upper = gram_schatten_bound(gram, log_scale, steps)
        lower = gram_power_lower_bound(gram, log_scale, steps)
        assert upper.shape == sigma.shape == lower.shape
        assert torch.all(upper >= sigma * (1 - 1e-12))
        assert torch.all(lower <= sigma * (1 + 1e-12))
    assert torch.allclose(upper, sigma, rtol=1e-6)


def test_continuing_an_iteration_equals_running_it_at_once():
    mats = torch.randn(5, 6, 4, dtype=torch.complex128)
    gram, log_scale = gram_iterate(mats, 2)
    gram, log_scale = gram_iterate(gram, 3, log_scale)
    at_once = gram_schatten_bound(*gram_iterate(mats, 5), 5)
    assert torch.allclose(gram_schatten_bound(gram, log_scale, 5), at_once, rtol=1e-12)


def test_a_shared_scale_gives_the_same_bounds():
    mats = (
        torch.randn(6, 4, 4, dtype=torch.float64) * torch.logspace(-3, 3, 6)[:, None, None].double()
    )
    own = gram_schatten_bound(*gram_iterate(mats, 4), 4)
    gram, log_scale = gram_iterate(mats, 4, shared_scale=True)
    assert log_scale.dim() == 0
    assert torch.allclose(gram_schatten_bound(gram, log_scale, 4), own, rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e30])
def test_float32_gram_bound_keeps_its_log_scale_in_float64(scale):
    # the float32 log-scale reaches 2^t |log f| ~ 1e5, where its rounding made the bound sit
    # up to 4e-6 below the true norm; now only the matrix products round (~1e-7)
    generator = torch.Generator().manual_seed(3)
    worst = 0.0
    for _ in range(20):
        weight = torch.randn(5, 5, generator=generator) * scale
        true = float(torch.linalg.matrix_norm(weight.double(), 2))
        bound = dense_norm(weight, method="gram")
        assert bound.value.dtype == torch.float32
        worst = max(worst, (true - float(bound)) / true)
    assert worst < 5e-7
