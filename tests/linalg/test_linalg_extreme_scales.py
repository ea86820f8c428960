"""Every norm method at the edges of its dtype: subnormal, huge, mixed zero/nonzero weights and
float16/bfloat16/float32/float64 inputs, against a float64 SVD of the explicit matrix.

Regression for issue #13 item 13: Gram methods returned an "upper" bound of 0 (or inf, NaN, a
LAPACK error) outside 1e-30..1e30. The oracle rescales the weight by an exact power of two
before the float64 SVD, so it holds at every scale.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipcert.errors import BadInputError
from lipcert.linalg import CONV_METHODS, DENSE_METHODS, conv_norm, dense_norm
from lipcert.linalg.gram import gram_iterate, gram_schatten_bound

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# relative rounding of a norm computed in the working dtype (float32 for the 16-bit types)
RTOL = {torch.float16: 2e-6, torch.bfloat16: 2e-6, torch.float32: 2e-6, torch.float64: 1e-12}


def _exponent_range(dtype: torch.dtype) -> tuple[int, int]:
    """Binary exponents of the largest entry, from deep subnormal to near the maximum."""
    info = torch.finfo(dtype)
    return int(math.log2(info.smallest_normal * info.eps)) + 4, int(math.log2(info.max)) - 1


def _oracle(matrix64: torch.Tensor) -> tuple[float, int]:
    """``(sigma_1(matrix) 2^-e, e)`` from a float64 SVD of the matrix scaled by ``2^-e``."""
    exponent = int(torch.frexp(matrix64.abs().amax()).exponent)
    scaled = torch.ldexp(matrix64, torch.tensor(-exponent))
    return float(torch.linalg.svdvals(scaled)[0]), exponent


def _check(bound, truth_scaled: float, exponent: int, dtype: torch.dtype) -> None:
    """The bound keeps its guarantee against the scaled truth (slack: rounding in the dtype
    and the subnormal spacing of the result)."""
    value = float(bound)
    assert math.isfinite(value), bound
    assert bound.value.dtype == (torch.float32 if dtype in DTYPES[:2] else dtype)
    info = torch.finfo(bound.value.dtype)
    tiny = info.smallest_normal * info.eps
    scaled = math.ldexp(value, -exponent)
    slack = RTOL[dtype] * truth_scaled + math.ldexp(2 * tiny, -exponent)
    if bound.guarantee == "upper":  # rounded up when scaled back: only computing rounds down
        assert scaled >= truth_scaled * (1 - RTOL[dtype]), (bound, truth_scaled, exponent)
    elif bound.guarantee == "exact":
        assert abs(scaled - truth_scaled) <= slack, (bound, truth_scaled, exponent)
    else:
        assert scaled <= truth_scaled + slack, (bound, truth_scaled, exponent)
    if truth_scaled > 0 and bound.is_sound:
        assert value > 0, bound


@st.composite
def weights(draw, shape):
    """A weight of ``shape`` in a random dtype, largest entry ``2^e`` for ``e`` across the
    dtype's range, some entries zero."""
    dtype = draw(st.sampled_from(DTYPES))
    low, high = _exponent_range(dtype)
    exponent = draw(st.integers(low, high))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.sampled_from((1.0, 0.6, 0.2)))
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator, dtype=torch.float64)
    base = base * (torch.rand(shape, generator=generator, dtype=torch.float64) < density)
    base = base / base.abs().amax().clamp_min(1e-300) * 0.999
    weight = torch.ldexp(base, torch.tensor(exponent)).to(dtype)
    return weight


def _may_overflow(truth_scaled: float, exponent: int, dtype: torch.dtype) -> bool:
    """A bound up to 64x the truth may exceed the largest number of the result's dtype."""
    top = torch.finfo(torch.float32 if dtype in DTYPES[:2] else dtype).max
    return math.log2(max(truth_scaled, 1e-300)) + exponent + 6 > math.log2(top)


def _run_all(norm, methods, truth_scaled, exponent, dtype):
    for method in methods:
        try:
            bound = norm(method)
        except BadInputError as error:
            assert _may_overflow(truth_scaled, exponent, dtype), (method, error)
            assert "float64" in str(error)
            continue
        _check(bound, truth_scaled, exponent, dtype)


@SETTINGS
@given(
    st.integers(1, 6).flatmap(lambda m: st.integers(1, 6).flatmap(lambda n: weights((m, n))))
)
def test_dense_methods_hold_at_every_scale_and_dtype(weight):
    truth, exponent = _oracle(weight.double())
    _run_all(lambda m: dense_norm(weight, m), DENSE_METHODS, truth, exponent, weight.dtype)


@st.composite
def conv_weights(draw):
    dims = draw(st.sampled_from((1, 2)))
    k = draw(st.integers(1, 3))
    c_out, c_in = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    kernel = draw(weights((c_out, c_in, *(k,) * dims)))
    n = draw(st.integers(k, 5))
    stride = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(("zeros", "circular")))
    padding = draw(st.integers(0, min(k, n) if mode == "circular" else k))
    return kernel, n, stride, padding, mode


@SETTINGS
@given(conv_weights())
def test_conv_methods_hold_at_every_scale_and_dtype(conv_matrix, case):
    kernel, n, stride, padding, mode = case
    exponent = int(torch.frexp(kernel.double().abs().amax()).exponent)
    unit = torch.ldexp(kernel.double(), torch.tensor(-exponent))
    truth = float(torch.linalg.svdvals(conv_matrix(unit, n, stride, padding, mode))[0])
    _run_all(
        lambda m: conv_norm(kernel, n, stride, padding, mode, method=m),
        CONV_METHODS + ("auto",), truth, exponent, kernel.dtype,
    )


def _kernel(scale: float, dtype=torch.float32) -> torch.Tensor:
    base = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return (base / base.abs().amax() * scale).to(dtype)


@pytest.mark.parametrize(
    "scale, methods",
    [
        (2e37, ("gram-kernel", "gram", "gram-pruned", "exact", "power")),
        (1e-40, ("gram", "gram-pruned", "gram-kernel", "exact", "power")),
        (1e-44, ("gram", "gram-pruned", "gram-kernel", "exact")),
    ],
)
def test_issue_cases_give_sound_nonzero_bounds(conv_matrix, scale, methods):
    kernel = _kernel(scale)
    unit = kernel.double() / scale
    truth = float(torch.linalg.svdvals(conv_matrix(unit, 6, 1, 1, "zeros"))[0]) * scale
    for method in methods:
        bound = conv_norm(kernel, 6, padding=1, method=method)
        assert 0 < float(bound) < math.inf, (method, bound)
        if bound.is_sound:
            assert float(bound) >= truth * (1 - 2e-6), (method, bound, truth)
    dense = kernel.reshape(3, -1)
    sigma = float(torch.linalg.svdvals(dense.double())[0])
    for method in ("gram", "exact"):
        assert float(dense_norm(dense, method)) >= sigma * (1 - 2e-6)


def test_gram_iterate_helper_handles_subnormal_and_huge_batches():
    mats = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scales = torch.tensor([1e-44, 1e-40, 1e30, 3e37], dtype=torch.float64)[:, None, None]
    narrow = (mats / mats.abs().amax(dim=(-2, -1), keepdim=True) * scales).float()
    sigma = torch.linalg.svdvals(narrow.double())[:, 0]
    for shared in (False, True):
        gram, log_scale = gram_iterate(narrow, 6, shared_scale=shared)
        if shared:
            continue  # one scale over 1e-44..3e37: only the huge matrices keep precision
        bound = gram_schatten_bound(gram, log_scale, 6).double()
        assert torch.all(bound >= sigma * (1 - 2e-6)), (bound, sigma)
        assert torch.all(torch.isfinite(bound))


def test_a_norm_beyond_the_dtype_raises_instead_of_inf():
    weight = torch.full((4, 4), 3e38)
    for method in DENSE_METHODS:
        with pytest.raises(BadInputError, match="float64"):
            dense_norm(weight, method)
    assert float(dense_norm(weight.double(), "gram")) == pytest.approx(1.2e39, rel=1e-6)
    for method in CONV_METHODS:
        with pytest.raises(BadInputError, match="float64"):
            conv_norm(weight.reshape(1, 1, 4, 4), 6, padding=1, method=method)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights_are_computed_in_float32(conv_matrix, dtype):
    kernel = _kernel(1.0, dtype)
    truth = float(torch.linalg.svdvals(conv_matrix(kernel.double(), 5, 1, 1, "zeros"))[0])
    for method in CONV_METHODS + ("auto",):
        bound = conv_norm(kernel, 5, padding=1, method=method)
        assert bound.value.dtype == torch.float32
        if bound.is_sound:
            assert float(bound) >= truth * (1 - 2e-6), (method, bound)
    dense = kernel.reshape(3, -1)
    assert dense_norm(dense, "exact").value.dtype == torch.float32
