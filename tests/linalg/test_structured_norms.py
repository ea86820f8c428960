"""lipcert.linalg.structured: circulant / Toeplitz conventions against scipy, norms against the
SVD of the explicit matrix, the guarantee of every Toeplitz method (hypothesis), errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipcert.errors import BadInputError
from lipcert.linalg import TOEPLITZ_METHODS, circulant_norm, toeplitz_norm
from lipcert.linalg.structured import (
    circulant_apply,
    circulant_matrix,
    toeplitz_apply,
    toeplitz_embedding,
    toeplitz_matrix,
    trig_correction,
)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
SHAPES = [(4, 4), (3, 7), (7, 3), (1, 5), (5, 1), (1, 1), (6, 6)]


def vector(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def col_row(m: int, n: int, seed: int, dtype=torch.float64):
    col, row = vector(m, seed, dtype), vector(n, seed + 1000, dtype)
    row[0] = col[0]
    return col, row


def spectral(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.double(), 2))


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 16])
def test_circulant_convention_is_scipys_first_column(n):
    c = vector(n, n)
    oracle = torch.from_numpy(scipy.linalg.circulant(c.numpy()))
    assert torch.equal(circulant_matrix(c), oracle)
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(circulant_apply(c, x), x @ oracle.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(circulant_apply(c, x, transpose=True), x @ oracle,
                               atol=1e-12, rtol=0)
    c32, x32 = c.float(), x.float()
    torch.testing.assert_close(circulant_apply(c32, x32), (x @ oracle.T).float(), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 64])
def test_circulant_norm_is_exact_and_has_the_svd_gradient(n):
    c = vector(n, 3 * n).requires_grad_()
    bound = circulant_norm(c)
    assert bound.guarantee == "exact"
    matrix = circulant_matrix(c)
    truth = torch.linalg.matrix_norm(matrix, 2)
    assert abs(float(bound) - float(truth.detach())) <= 1e-12 * float(truth.detach())
    (grad,) = torch.autograd.grad(bound.value, c)
    (oracle,) = torch.autograd.grad(truth, c)
    torch.testing.assert_close(grad, oracle, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_toeplitz_convention_is_scipys(m, n):
    col, row = col_row(m, n, m * 10 + n)
    oracle = torch.from_numpy(scipy.linalg.toeplitz(col.numpy(), row.numpy()))
    assert torch.equal(toeplitz_matrix(col, row), oracle)
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(toeplitz_apply(col, row, x), x @ oracle.T, atol=1e-12, rtol=0)
    y = torch.randn(4, m, dtype=torch.float64)
    torch.testing.assert_close(toeplitz_apply(col, row, y, transpose=True), y @ oracle,
                               atol=1e-12, rtol=0)
    # any embedding size >= m + n - 1 holds T in its top-left block
    big = circulant_matrix(toeplitz_embedding(col, row, m + n + 6))
    assert torch.equal(big[:m, :n], oracle)
    torch.testing.assert_close(toeplitz_apply(col.float(), row.float(), x.float(), size=32),
                               (x @ oracle.T).float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_every_toeplitz_method_keeps_its_guarantee(m, n, guarantee_check):
    col, row = col_row(m, n, m + 7 * n)
    truth = spectral(toeplitz_matrix(col, row))
    bounds = {method: toeplitz_norm(col, row, method) for method in TOEPLITZ_METHODS}
    assert {method: b.guarantee for method, b in bounds.items()} == {
        "embedding": "upper", "trig": "upper", "exact": "exact", "gram": "upper",
        "power": "estimate"}
    for bound in bounds.values():
        guarantee_check(bound, truth, rtol=1e-9)
    # the embedding bound samples the trigonometric polynomial: never above Gray's sup |f|
    assert float(bounds["embedding"]) <= float(bounds["trig"]) * (1 + 1e-12)
    assert float(bounds["power"]) >= truth * (1 - 1e-6)  # converged on these small sizes


def fine_sup(col: torch.Tensor, row: torch.Tensor, samples: int) -> float:
    """max |f| on a fine grid, with f evaluated directly from its coefficients (numpy)."""
    omega = np.linspace(0.0, 2 * np.pi, samples, endpoint=False)
    h = np.arange(len(col))
    d = np.arange(1, len(row))
    f = np.exp(-1j * np.outer(omega, h)) @ col.numpy()
    if len(d):
        f = f + np.exp(1j * np.outer(omega, d)) @ row.numpy()[1:]
    return float(np.abs(f).max())


@st.composite
def toeplitz_cases(draw):
    m, n = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.integers(-4, 4))
    col, row = col_row(m, n, seed)
    if draw(st.booleans()):  # a smooth generating function: a worse case for sampled bounds
        col = col / (1 + torch.arange(m, dtype=torch.float64)) ** 2
        row = row / (1 + torch.arange(n, dtype=torch.float64)) ** 2
        row[0] = col[0]
    span = m + n - 2
    low = max(m + n - 1, math.floor(math.pi * span / 2) + 1)
    grid = draw(st.integers(low, max(low, 4 * (m + n))))
    size = draw(st.integers(m + n - 1, 3 * (m + n)))
    return col * scale, row * scale, grid, size


@SETTINGS
@given(case=toeplitz_cases())
def test_toeplitz_upper_bounds_hold_for_random_matrices(case):
    col, row, grid, size = case
    truth = spectral(toeplitz_matrix(col, row))
    slack = 1e-10 * max(truth, 1e-300)
    embedding = float(toeplitz_norm(col, row, "embedding", size=size))
    trig = float(toeplitz_norm(col, row, "trig", grid=grid))
    gram = float(toeplitz_norm(col, row, "gram"))
    assert embedding >= truth - slack
    assert gram >= truth - slack
    # the Bernstein-corrected sampled maximum bounds sup |f|, even for the coarsest grids
    assert trig >= fine_sup(col, row, 64 * (len(col) + len(row))) * (1 - 1e-10)
    assert trig >= embedding * (1 - 1e-10)
    assert float(toeplitz_norm(col, row, "power")) <= truth + slack


@SETTINGS
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1), log_scale=st.integers(-6, 6))
def test_circulant_norm_matches_the_svd_at_every_scale(n, seed, log_scale):
    c = vector(n, seed) * 10.0**log_scale
    truth = spectral(circulant_matrix(c))
    assert abs(float(circulant_norm(c)) - truth) <= 1e-12 * truth + 1e-300


def test_measured_looseness_of_toeplitz_bounds_is_about_that_of_the_notes():
    """RANDOMIZED.md 5.4 measured embedding/exact ~1.3-1.65 for random square Toeplitz; a
    regression to the loose trig bound (or a wrong embedding) would show here."""
    ratios = []
    for seed in range(5):
        col, row = col_row(64, 64, seed)
        truth = spectral(toeplitz_matrix(col, row))
        ratios.append(float(toeplitz_norm(col, row)) / truth)
    assert 1.0 <= min(ratios) and max(ratios) < 2.2
    assert 1.2 < sum(ratios) / len(ratios) < 1.9


def test_gradcheck_in_float64():
    c = vector(7, 0).requires_grad_()
    x = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: circulant_apply(a, b), (c, x))
    col, row = col_row(4, 6, 1)
    col.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: toeplitz_norm(a, torch.cat((a[:1], row[1:])), "embedding").value, (col,))


def test_trig_correction_formula():
    assert trig_correction(0, 1) == 1.0
    assert trig_correction(4, 64) == pytest.approx(1 / (1 - math.pi * 4 / 128))
    with pytest.raises(BadInputError, match="too coarse"):
        trig_correction(10, 15)


@pytest.mark.parametrize(("args", "message"), [
    ((torch.zeros(2, 3),), "1-D"),
    ((torch.zeros(0),), "1-D"),
    ((torch.arange(4),), "floating-point"),
    ((torch.zeros(4, dtype=torch.complex64),), "floating-point"),
    ((torch.tensor([1.0, float("nan")]),), "NaN"),
    (([1.0, 2.0],), "torch.Tensor"),
])
def test_circulant_norm_refuses_bad_input(args, message):
    with pytest.raises(BadInputError, match=message):
        circulant_norm(*args)


def test_toeplitz_norm_refuses_bad_input():
    col, row = col_row(3, 4, 0)
    wrong = row.clone()
    wrong[0] += 1
    with pytest.raises(BadInputError, match="first_row\\[0\\]"):
        toeplitz_norm(col, wrong)
    with pytest.raises(BadInputError, match="unknown toeplitz method"):
        toeplitz_norm(col, row, "svd")
    with pytest.raises(BadInputError, match="does not take"):
        toeplitz_norm(col, row, "embedding", n_iter=3)
    with pytest.raises(BadInputError, match=">= m \\+ n - 1"):
        toeplitz_norm(col, row, "embedding", size=5)
    with pytest.raises(BadInputError, match="grid"):
        toeplitz_norm(col, row, "trig", grid=4)
    with pytest.raises(BadInputError, match="dtype"):
        toeplitz_norm(col, row.float())
    with pytest.raises(BadInputError, match="last dimension"):
        toeplitz_apply(col, row, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(BadInputError, match="length"):
        circulant_apply(col, torch.zeros(4, dtype=torch.float64))


def test_fft_norms_at_the_ends_of_float32_are_finite_sound_or_refused():
    """Red-team finding: a float32 first column of 3e38 gave NormBound(nan, 'exact') (the rfft
    overflowed); now a representable norm is returned rounded up, an unrepresentable one raises."""
    from lipcert.errors import BadInputError
    from lipcert.linalg import circulant_norm, toeplitz_norm

    big = torch.full((5,), 1e37)
    assert float(circulant_norm(big).value) >= 5e37 * (1 - 1e-6)
    assert float(toeplitz_norm(big[:3], big[:4]).value) >= 6e37 * (1 - 1e-6)
    tiny = torch.full((5,), 1e-42)
    assert float(circulant_norm(tiny).value) >= float(tiny.double().sum())
    for method in ("embedding", "trig"):
        with pytest.raises(BadInputError, match="beyond the largest"):
            toeplitz_norm(torch.full((3,), 3e38), torch.full((3,), 3e38), method=method)
    with pytest.raises(BadInputError, match="beyond the largest"):
        circulant_norm(torch.full((5,), 3e38))
