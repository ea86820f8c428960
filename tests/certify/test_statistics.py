"""Clopper-Pearson bounds: coverage by simulation, closed-form edge cases, scipy oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lipcert.certify.statistics import clopper_pearson_lower, clopper_pearson_upper
from lipcert.errors import BadInputError


@pytest.mark.parametrize("n,p", [(10, 0.5), (50, 0.9), (100, 0.99), (200, 0.3), (1000, 0.999)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_coverage_over_simulated_binomial_draws(n, p, alpha):
    rng = np.random.default_rng(n)
    trials = 40_000
    k = rng.binomial(n, p, size=trials)
    lo = clopper_pearson_lower(k, n, alpha)
    up = clopper_pearson_upper(k, n, alpha)
    tol = 4 * np.sqrt(alpha * (1 - alpha) / trials)
    assert np.mean(lo > p) <= alpha + tol
    assert np.mean(up < p) <= alpha + tol


def test_coverage_is_not_trivially_loose():
    # The bound must be near its nominal level for a p where it is attained closely, so a
    # bound returning 0 always would fail here.
    rng = np.random.default_rng(0)
    n, p, alpha = 400, 0.6, 0.05
    k = rng.binomial(n, p, size=40_000)
    assert np.mean(clopper_pearson_lower(k, n, alpha) > p) > 0.02


def test_edge_cases_are_exact():
    for n in [1, 10, 100, 100_000]:
        assert clopper_pearson_lower(n, n, 0.001) == 0.001 ** (1 / n)
        assert clopper_pearson_lower(0, n, 0.001) == 0.0
        assert clopper_pearson_upper(n, n, 0.001) == 1.0
        assert clopper_pearson_upper(0, n, 0.001) == pytest.approx(1 - 0.001 ** (1 / n), rel=1e-12)
    # The cap of Cohen's radius: n = 1e5, alpha = 1e-3 -> 3.8115 sigma.
    cap = stats.norm.ppf(clopper_pearson_lower(100_000, 100_000, 1e-3))
    assert cap == pytest.approx(3.8115, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), alpha=st.floats(1e-6, 0.5))
def test_matches_beta_quantiles_and_orders(n, data, alpha):
    k = data.draw(st.integers(0, n))
    lo, up = clopper_pearson_lower(k, n, alpha), clopper_pearson_upper(k, n, alpha)
    assert isinstance(lo, float) and isinstance(up, float)
    assert 0.0 <= lo <= k / n <= up <= 1.0
    if 0 < k:
        assert lo == pytest.approx(stats.beta.ppf(alpha, k, n - k + 1), rel=1e-9, abs=1e-300)
    if k < n:
        assert up == pytest.approx(stats.beta.ppf(1 - alpha, k + 1, n - k), rel=1e-9)
    # Binomial tail at the bound equals alpha (definition of Clopper-Pearson).
    if 0 < k < n:
        assert stats.binom.sf(k - 1, n, lo) == pytest.approx(alpha, rel=1e-6)


def test_vectorized_matches_scalar():
    k = np.array([0, 3, 9, 10])
    lo = clopper_pearson_lower(k, 10, 0.01)
    assert lo.shape == (4,)
    assert [clopper_pearson_lower(int(i), 10, 0.01) for i in k] == list(lo)
    up = clopper_pearson_upper(k, np.array([10, 10, 10, 10]), 0.01)
    assert [clopper_pearson_upper(int(i), 10, 0.01) for i in k] == list(up)


@pytest.mark.parametrize("k,n,alpha", [
    (-1, 10, 0.1), (11, 10, 0.1), (0, 0, 0.1), (1, 10, 0.0), (1, 10, 1.0), (1, 10, float("nan")),
    (1.5, 10, 0.1), (True, 10, 0.1), (1, 10, True)])
def test_bad_input(k, n, alpha):
    with pytest.raises(BadInputError):
        clopper_pearson_lower(k, n, alpha)
    with pytest.raises(BadInputError):
        clopper_pearson_upper(k, n, alpha)
