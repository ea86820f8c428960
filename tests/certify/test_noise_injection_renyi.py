"""Divergences and certificate routes of lipcert.certify.renyi against independent oracles:
numerical integration, brute-force minimization over the simplex, Cohen's tight radius, and
the exact one-dimensional Neyman-Pearson radii of Laplace and uniform noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import laplace, norm

from lipcert.certify import cohen_radius, renyi
from lipcert.errors import BadInputError

ORDERS = [1.5, 2.0, 5.0]


def renyi_by_quadrature(logp, logq, order, low=-40, high=40):
    """D_order(p || q) = log(int p^order q^(1-order)) / (order - 1), by scipy.integrate
    (densities given as log-densities)."""
    value, _ = integrate.quad(lambda z: math.exp(order * logp(z) + (1 - order) * logq(z)),
                              low, high, points=[0.0], limit=400)
    return math.log(value) / (order - 1)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shift", [0.1, 0.7, 2.0])
def test_gaussian_renyi_matches_numerical_integration(order, shift):
    sigma = 0.5
    # isotropic Gaussians: the divergence of a shift reduces to one dimension along it
    expected = renyi_by_quadrature(lambda z: norm.logpdf(z, shift, sigma),
                                   lambda z: norm.logpdf(z, 0, sigma), order, -12, 12)
    assert renyi.gaussian_renyi(shift, sigma, order) == pytest.approx(expected, rel=1e-6)
    # the smallest eigenvalue (a variance) enters, not the standard deviation
    assert renyi.gaussian_renyi(shift, sigma, order) != pytest.approx(
        order * shift**2 / (2 * sigma), rel=1e-3)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shift", [0.1, 0.7, 2.0])
def test_laplace_renyi_matches_numerical_integration_both_orders(order, shift):
    b = 0.5 / math.sqrt(2)
    p = lambda z: laplace.logpdf(z, shift, b)  # noqa: E731
    q = lambda z: laplace.logpdf(z, 0, b)  # noqa: E731
    value = float(renyi.laplace_renyi(shift, b, order))
    assert value == pytest.approx(renyi_by_quadrature(p, q, order), rel=1e-6)
    assert value == pytest.approx(renyi_by_quadrature(q, p, order), rel=1e-6)
    assert value <= shift / b  # below the max-divergence


def test_laplace_kl_and_max_divergence_limits():
    b, t = 0.3, 0.8
    kl, _ = integrate.quad(lambda z: laplace.pdf(z, t, b) * (laplace.logpdf(z, t, b)
                           - laplace.logpdf(z, 0, b)), -30, 30, points=[0.0, t], limit=400)
    assert float(renyi.laplace_renyi(t, b, 1.0)) == pytest.approx(kl, rel=1e-7)
    assert float(renyi.laplace_renyi(t, b, math.inf)) == pytest.approx(t / b)
    assert float(renyi.laplace_renyi(t, b, 1e6)) == pytest.approx(t / b, rel=1e-4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6), st.sampled_from(ORDERS + [1.0]))
def test_laplace_worst_l1_shift_sits_on_one_coordinate(parts, order):
    """f_lambda is convex with f(0) = 0, so any split of an l1 budget gives a smaller sum."""
    b, budget = 0.4, 1.3
    total = sum(parts)
    if total == 0:
        return
    shift = np.asarray(parts) / total * budget
    split = renyi.laplace_renyi(shift, b, order).sum()
    assert split <= float(renyi.laplace_renyi(budget, b, order)) + 1e-12


def divergence(q, p, order):
    return np.log(np.sum(q**order * p ** (1 - order), axis=-1)) / (order - 1)


@pytest.mark.parametrize("order", [1.5, 3.0])
def test_renyi_bound_is_the_smallest_divergence_of_a_law_whose_argmax_moved(order):
    p = np.array([0.6, 0.3, 0.1])
    grid = np.linspace(1e-6, 1 - 1e-6, 801)
    q1, q2 = np.meshgrid(grid, grid, indexing="ij")
    q3 = 1 - q1 - q2
    inside = (q3 > 0) & (q2 >= q1)  # class 2 (as good as) beats class 1
    q = np.stack([q1[inside], q2[inside], q3[inside]], axis=-1)
    bound = float(renyi.renyi_argmax_bound(p[0], p[1], order))
    moved = divergence(q, p, order)  # D(Q || P): perturbed versus clean
    assert moved.min() == pytest.approx(bound, abs=2e-3)
    assert moved.min() >= bound - 1e-9
    # the pitfall: the other order is smaller, so the formula would be unsound with it
    assert divergence(p, q, order).min() < bound - 1e-3


# RANDOMIZED.md section 3.4: sigma = 0.5, p2 = 1 - p1, noise at the input (L = 1)
TABLE = [(0.6, 0.1267, 0.1011, 1.50), (0.8, 0.4208, 0.3371, 1.49),
         (0.9, 0.6408, 0.5160, 1.47), (0.99, 1.1632, 0.9540, 1.40)]


@pytest.mark.parametrize("p1, cohen, expected, order", TABLE)
def test_gaussian_routes_match_the_table_and_stay_below_cohen(p1, cohen, expected, order):
    radius, best = renyi.gaussian_renyi_radius(p1, 1 - p1, 0.5)
    assert float(radius) == pytest.approx(expected, abs=1e-4)
    assert float(best) == pytest.approx(order, abs=0.02)
    assert float(renyi.cohen_ceiling(p1, 1 - p1, 0.5)) == pytest.approx(cohen, abs=1e-4)
    assert float(renyi.cohen_ceiling(p1, 1 - p1, 0.5)) == pytest.approx(cohen_radius(p1, 0.5))
    assert float(radius) < cohen
    assert float(renyi.gaussian_tv_radius(p1, 1 - p1, 0.5)) < cohen


def test_laplace_table_values():
    b = 0.5 / math.sqrt(2)  # same per-coordinate std as the Gaussian sigma = 0.5
    assert float(renyi.laplace_pure_radius(0.8, 0.2, b)) == pytest.approx(0.245, abs=5e-4)
    radius, order = renyi.laplace_renyi_radius(0.8, 0.2, b)
    assert float(radius) == pytest.approx(0.324, abs=5e-4)  # Teng's l1 radius
    assert math.isinf(float(order))


@settings(max_examples=40, deadline=None)
@given(st.floats(0.501, 0.9999), st.floats(0.0, 1.0), st.floats(0.05, 2.0))
def test_no_route_beats_a_tight_radius(p1, fraction, sigma):
    p2 = fraction * (1 - p1)
    cohen = float(renyi.cohen_ceiling(p1, p2, sigma))
    assert float(renyi.gaussian_renyi_radius(p1, p2, sigma)[0]) <= cohen * (1 + 1e-9)
    assert float(renyi.gaussian_tv_radius(p1, p2, sigma)) <= cohen * (1 + 1e-9)
    # with p2 = 1 - p1 the exact 1-D Neyman-Pearson radii of Laplace and uniform noise
    b, a = sigma / math.sqrt(2), sigma * math.sqrt(3)
    exact_laplace = -b * math.log(2 * (1 - p1))
    for route in (renyi.laplace_pure_radius, renyi.laplace_tv_radius):
        assert float(route(p1, 1 - p1, b)) <= exact_laplace * (1 + 1e-9)
    assert float(renyi.laplace_renyi_radius(p1, 1 - p1, b)[0]) <= exact_laplace * (1 + 1e-6)
    assert float(renyi.uniform_tv_radius(p1, 1 - p1, a)) == pytest.approx(2 * a * (p1 - 0.5))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.51, 0.999), st.floats(0.1, 3.0), st.floats(0.1, 10.0))
def test_radius_scales_as_sigma_over_lipschitz(p1, sigma, lipschitz):
    p2 = 1 - p1
    base = float(renyi.gaussian_renyi_radius(p1, p2, 1.0)[0])
    scaled = float(renyi.gaussian_renyi_radius(p1, p2, sigma, lipschitz)[0])
    assert scaled == pytest.approx(base * sigma / lipschitz, rel=1e-6)
    base = float(renyi.laplace_pure_radius(p1, p2, 1.0))
    assert float(renyi.laplace_pure_radius(p1, p2, sigma, lipschitz)) == pytest.approx(
        base * sigma / lipschitz, rel=1e-9)


def test_tv_inverse_and_no_certificate_without_a_gap():
    kl = np.array([0.0, 0.01, 0.3, 2.0, 7.0])
    assert np.allclose(renyi.kl_for_tv(renyi.tv_from_kl(kl)), kl, rtol=1e-6, atol=1e-9)
    for route in (renyi.gaussian_tv_radius, renyi.laplace_tv_radius, renyi.uniform_tv_radius,
                  renyi.laplace_pure_radius):
        assert float(route(0.4, 0.4, 0.5)) == 0.0
    assert float(renyi.gaussian_renyi_radius(0.4, 0.4, 0.5)[0]) == 0.0
    assert float(renyi.laplace_renyi_radius(0.3, 0.3, 0.5)[0]) == 0.0


@pytest.mark.parametrize("args", [(0.8, 0.2, 0.0), (0.8, 0.2, -1.0), (0.8, 0.2, math.nan),
                                  (0.8, 0.2, math.inf), (math.nan, 0.2, 0.5), (1.2, 0.0, 0.5),
                                  (0.8, 0.5, 0.5)])
def test_bad_inputs_raise(args):
    with pytest.raises(BadInputError):
        renyi.gaussian_renyi_radius(*args)
    with pytest.raises(BadInputError):
        renyi.gaussian_renyi(1.0, 0.5, 0.5)
