"""Hypothesis property tests: guarantees on random shapes, scaling, dtypes, 1x1 kernels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipcert.linalg import CONV_METHODS, conv_norm, dense_norm

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SOUND_CONV_METHODS = tuple(m for m in CONV_METHODS if m not in ("power", "toeplitz"))


@st.composite
def conv_cases(draw):
    dims = draw(st.sampled_from((1, 2)))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(("zeros", "circular")))
    n = draw(st.integers(max(1, k - 1), 7 if dims == 1 else 5))
    low = max(0, -(-(k - n) // 2))
    padding = draw(st.integers(low, min(k, n) if mode == "circular" else k))
    if n + 2 * padding < k:
        padding = k
    c_out, c_in = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    kernel = torch.randn(
        c_out,
        c_in,
        *(k,) * dims,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )
    return kernel, n, stride, padding, mode


@SETTINGS
@given(case=conv_cases())
def test_random_convolutions_keep_their_guarantees(conv_oracle, guarantee_check, case):
    kernel, n, stride, padding, mode = case
    truth = conv_oracle(kernel, n, stride, padding, mode)
    for method in CONV_METHODS + ("auto",):
        guarantee_check(conv_norm(kernel, n, stride, padding, mode, method=method), truth)


@SETTINGS
@given(conv_cases(), st.floats(-1e3, 1e3).filter(lambda c: abs(c) > 1e-3))
def test_scaling_the_kernel_scales_every_bound(case, factor):
    kernel, n, stride, padding, mode = case
    for method in SOUND_CONV_METHODS:
        base = float(conv_norm(kernel, n, stride, padding, mode, method=method))
        scaled = float(conv_norm(kernel * factor, n, stride, padding, mode, method=method))
        assert scaled == pytest.approx(abs(factor) * base, rel=1e-9, abs=1e-300)


@SETTINGS
@given(conv_cases())
def test_float32_and_float64_agree(case):
    kernel, n, stride, padding, mode = case
    for method in SOUND_CONV_METHODS:
        wide = float(conv_norm(kernel, n, stride, padding, mode, method=method))
        narrow = conv_norm(kernel.float(), n, stride, padding, mode, method=method)
        assert narrow.value.dtype == torch.float32
        assert float(narrow) == pytest.approx(wide, rel=1e-4, abs=1e-6)


@SETTINGS
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from(("zeros", "circular")),
    st.integers(0, 2**31 - 1),
)
def test_one_by_one_kernels_equal_the_dense_norm(c_out, c_in, n, mode, seed):
    matrix = torch.randn(
        c_out, c_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    dense = float(dense_norm(matrix, "exact"))
    for kernel in (matrix[:, :, None], matrix[:, :, None, None]):
        for method in ("auto", "exact", "lmt", "singla-feizi"):
            bound = conv_norm(kernel, n, padding_mode=mode, method=method)
            assert float(bound) == pytest.approx(dense, rel=1e-9)
        kernel_gram = float(
            conv_norm(kernel, n, padding_mode=mode, method="gram-kernel", n_iter=12)
        )
        assert dense * (1 - 1e-12) <= kernel_gram <= dense * (1 + 1e-3)
        assert conv_norm(kernel, n, padding_mode=mode).guarantee == "exact"


@SETTINGS
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.floats(-1e6, 1e6).filter(lambda c: abs(c) > 1e-6),
    st.integers(0, 2**31 - 1),
)
def test_dense_bounds_scale_and_dominate(rows, cols, factor, seed):
    weight = torch.randn(
        rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    sigma = float(torch.linalg.svdvals(weight)[0])
    for method in ("exact", "gram"):
        base = float(dense_norm(weight, method))
        assert base >= sigma * (1 - 1e-12)
        assert float(dense_norm(weight * factor, method)) == pytest.approx(
            abs(factor) * base, rel=1e-9
        )
    assert float(dense_norm(weight.float(), "gram")) == pytest.approx(
        float(dense_norm(weight, "gram")), rel=1e-4
    )
