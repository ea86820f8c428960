"""Several-distribution certificate: closed-form equality with Cohen, the RANDOMIZED.md test
vectors, never below Cohen, full-dimensional Monte Carlo of the worst-case set, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from lipcert.certify import cohen_radius, multi_sigma_radius
from lipcert.certify.multi_sigma import closed_form_inactive, worst_case_set
from lipcert.errors import BadInputError

# (sigma0, sigma1, a0, a1, d) -> radius, RANDOMIZED.md section 2.5.
VECTORS = [
    ((0.5, 0.55, 0.80, 0.85, 2), 0.5654), ((0.5, 0.55, 0.80, 0.85, 10), 0.5274),
    ((0.5, 0.55, 0.80, 0.85, 30), 0.4530), ((0.5, 0.55, 0.80, 0.85, 60), 0.4325),
    ((0.5, 0.55, 0.80, 0.85, 100), 0.4257), ((0.5, 0.55, 0.80, 0.85, 200), 0.4218),
    ((0.5, 0.55, 0.80, 0.85, 500), 0.4208), ((0.5, 0.4, 0.80, 0.95, 10), 0.5162),
    ((0.5, 0.4, 0.80, 0.95, 100), 0.4213), ((0.5, 0.4, 0.80, 0.90, 10), 0.4307),
    ((0.25, 0.20, 0.70, 0.85, 30), 0.1325), ((0.25, 0.20, 0.70, 0.85, 784), 0.1311),
    ((0.25, 0.30, 0.70, 0.60, 30), 0.1311),
]


@pytest.mark.parametrize("setting,expected", VECTORS)
def test_matches_the_test_vectors(setting, expected):
    s0, s1, a0, a1, d = setting
    start = time.process_time()
    radius = multi_sigma_radius(s0, [s1], [a0, a1], d)
    assert time.process_time() - start < 1.0
    assert radius == pytest.approx(expected, abs=1e-3)
    assert radius >= cohen_radius(a0, s0)


def test_equals_cohen_bit_for_bit_without_probes_and_when_the_closed_form_check_holds():
    assert multi_sigma_radius(0.5, [], [0.8], 100) == cohen_radius(0.8, 0.5)
    assert closed_form_inactive(0.25, 0.30, 0.70, 0.60)
    assert multi_sigma_radius(0.25, [0.3], [0.7, 0.6], 30) == cohen_radius(0.7, 0.25)
    # Just past the closed-form threshold the probe starts to matter (the check is not vacuous).
    threshold = float(norm.cdf(0.5 * norm.ppf(0.8) / 0.55))
    assert multi_sigma_radius(0.5, [0.55], [0.8, threshold - 1e-6], 10) == cohen_radius(0.8, 0.5)
    assert multi_sigma_radius(0.5, [0.55], [0.8, threshold + 0.05], 10) > cohen_radius(0.8, 0.5)
    assert multi_sigma_radius(0.5, [0.55], [0.4, 0.99], 10) == 0.0


@settings(max_examples=25, deadline=None)
@given(d=st.sampled_from([2, 5, 30, 100, 784, 3072]), ratio=st.floats(0.6, 1.6),
       a0=st.floats(0.55, 0.999), a1=st.floats(0.05, 0.9999))
def test_never_below_cohen_and_fast_over_a_random_sweep(d, ratio, a0, a1):
    if abs(ratio - 1) < 0.02:
        ratio = 1.1
    start = time.process_time()
    radius = multi_sigma_radius(0.5, [0.5 * ratio], [a0, a1], d)
    assert time.process_time() - start < 1.0
    assert radius >= cohen_radius(a0, 0.5)
    assert np.isfinite(radius)


def _sample_membership(wc, samples: int, which: str, rng) -> float:
    """Full-dimensional Monte Carlo: P(z in S) for z drawn from the named law, membership
    decided from the three Gaussian log-densities computed directly (not the (t, s) form)."""
    d, s0, s1, eps = wc.dim, wc.sigma0, wc.sigma1, wc.eps
    sigma, shift = {"p0": (s0, 0.0), "p1": (s1, 0.0), "q": (s0, eps)}[which]
    hits = 0
    for _ in range(samples // 50_000):
        z = rng.standard_normal((50_000, d)) * sigma
        z[:, 0] += shift
        sq = (z * z).sum(1)
        log_q = -((sq - 2 * eps * z[:, 0] + eps**2) / (2 * s0**2)) - d * np.log(s0)
        log_p0 = -sq / (2 * s0**2) - d * np.log(s0)
        log_p1 = -sq / (2 * s1**2) - d * np.log(s1)
        # l1 absorbs d log(sigma0/sigma1): lambda1 = exp(l1 - d log(s0 / s1)).
        log_rhs = np.logaddexp(wc.l0 + log_p0, wc.l1 - d * np.log(s0 / s1) + log_p1)
        hits += int((log_q < log_rhs).sum())
    return hits / samples


@pytest.mark.parametrize("d,eps", [(30, 0.55), (60, 0.50)])
def test_worst_case_set_reproduces_the_probabilities_in_full_dimension(d, eps):
    wc = worst_case_set(0.5, 0.55, 0.80, 0.85, d, eps)
    rng = np.random.default_rng(d)
    samples, tol = 400_000, 4 * np.sqrt(0.25 / 400_000)
    assert _sample_membership(wc, samples, "p0", rng) == pytest.approx(0.80, abs=tol)
    assert _sample_membership(wc, samples, "p1", rng) == pytest.approx(0.85, abs=tol)
    assert _sample_membership(wc, samples, "q", rng) == pytest.approx(wc.q, abs=tol)
    expected = {(30, 0.55): 0.42955, (60, 0.50): 0.44807}[(d, eps)]
    assert wc.q == pytest.approx(expected, abs=1e-3)


def test_at_the_certified_radius_the_worst_case_sits_at_one_half():
    radius = multi_sigma_radius(0.5, [0.55], [0.80, 0.85], 30)
    wc = worst_case_set(0.5, 0.55, 0.80, 0.85, 30, radius)
    rng = np.random.default_rng(0)
    tol = 4 * np.sqrt(0.25 / 400_000)
    assert wc.q > 0.5 - 1e-3
    assert _sample_membership(wc, 400_000, "q", rng) == pytest.approx(0.5, abs=tol + 1e-3)
    # A little beyond the radius the worst case classifier flips: the radius is nearly tight.
    beyond = worst_case_set(0.5, 0.55, 0.80, 0.85, 30, radius + 0.02)
    assert beyond.q < 0.5
    assert _sample_membership(beyond, 400_000, "q", rng) < 0.5


def test_the_reference_low_dimensional_certificate_is_refused():
    # araujoalexandre/RS_Certificate reports 0.560 at d = 30; the true worst case is 0.4530.
    assert multi_sigma_radius(0.5, [0.55], [0.80, 0.85], 30) < 0.46
    assert worst_case_set(0.5, 0.55, 0.80, 0.85, 30, 0.56).q < 0.5


def test_several_probes_take_the_best_and_stay_sound():
    one = multi_sigma_radius(0.5, [0.55], [0.8, 0.85], 30)
    both = multi_sigma_radius(0.5, [0.55, 0.4], [0.8, 0.85, 0.5], 30)
    assert both == one  # the 0.4 probe with a1 = 0.5 is inactive (closed form)


@pytest.mark.parametrize("args,match", [
    ((0.5, [0.55], [0.8], 30), "p_lowers"),
    ((0.5, [0.55], [0.8, 1.2], 30), "probabilities"),
    ((0.5, [0.5], [0.8, 0.9], 30), "differ"),
    ((0.5, [0.55], [0.8, 0.9], 0), "dim"),
    ((-0.5, [0.55], [0.8, 0.9], 10), "sigma"),
    ((0.5, [0.55], [0.8, float("nan")], 10), "probabilities"),
])
def test_bad_input(args, match):
    with pytest.raises(BadInputError, match=match):
        multi_sigma_radius(*args)


def test_the_radius_holds_at_every_norm_below_it():
    radius = multi_sigma_radius(0.5, [0.55], [0.80, 0.85], 10)
    cohen = cohen_radius(0.80, 0.5)
    for eps in np.linspace(cohen, radius * 0.9999, 7):
        assert worst_case_set(0.5, 0.55, 0.80, 0.85, 10, float(eps)).q > 0.5
    # Cohen's radius 0 (a0 = 1/2 exactly) leaves nothing for the walk to start from.
    assert multi_sigma_radius(0.5, [0.55], [0.5, 0.99], 10) == 0.0
