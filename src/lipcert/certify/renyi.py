"""Divergences of shifted noise laws and the prediction-certificate routes built on them.

Pure numpy/scipy functions behind :func:`lipcert.certify.noise_injection_radii`. Setting
(Pinot et al. 2019, arXiv 1902.01148, Section "exponential family ensures robustness"): the
network is ``back(front(x) + z)``; moving the input by ``tau`` with ``||tau||_A <= alpha``
moves ``front(x)`` by a shift ``Delta`` with ``||Delta||_B <= L * alpha`` (``L`` the
``A -> B`` Lipschitz constant of ``front``), and the label law of the noisy network moves by
at most the divergence between the noise law and its shift by ``Delta`` (data processing).

Divergences (for a shift of size ``delta``; ``sigma`` a standard deviation, ``b`` the Laplace
scale, ``a`` the uniform half-width):

- Gaussian N(0, sigma^2 I): ``D_lambda = lambda delta^2 / (2 sigma^2)`` in l2 (the smallest
  EIGENVALUE of the covariance, sigma^2, not sigma), KL the case lambda = 1.
- Laplace, i.i.d. scale ``b``: per coordinate
  ``f_lambda(t) = log[(lambda/(2 lambda-1)) e^{(lambda-1)t/b} + ((lambda-1)/(2 lambda-1))
  e^{-lambda t/b}] / (lambda - 1)``, summed over coordinates. ``f_lambda`` is convex with
  ``f_lambda(0) = 0`` (a log-sum-exp of affine functions), hence superadditive, so over the
  l1 ball of radius ``delta`` the sum is largest for a shift on one coordinate:
  ``sup = f_lambda(delta)``, below ``delta / b`` (its lambda -> inf limit, the max-divergence).
  KL (lambda = 1): ``t/b + e^{-t/b} - 1``.
- Uniform on ``[-a, a]^d``: Renyi divergences are infinite (supports differ), but the total
  variation is ``1 - prod(1 - |Delta_i|/(2a)) <= ||Delta||_1 / (2a)``.

Routes (p1 >= p2 the top-two probabilities of the label law at x, from confidence bounds); the
argmax cannot change when (the formulas of RANDOMIZED.md section 3.4):

- (a) Renyi: ``D_lambda(perturbed || clean) < B_lambda(p1, p2) =
  -log(1 - p1 - p2 + 2 ((p1^{1-lambda} + p2^{1-lambda}) / 2)^{1/(1-lambda)})`` for some
  lambda > 1 (Li et al. 2019, "Certified adversarial robustness with additive noise");
  ``B_lambda = min_Q D_lambda(Q || P)`` over laws Q whose argmax moved, so the divergence must
  be the perturbed-versus-clean one (for shifts of Gaussian and Laplace noise both orders are
  equal). The radius is maximized over lambda.
- (b) total variation (Pinot et al.'s proposition): ``p1 - p2 > 2 eps'`` with
  ``eps' = min((3/2) sqrt(sqrt(1 + 4 KL/9) - 1), (e^{KL+1} - 1)/(e^{KL+1} + 1))``; for the
  uniform law, the exact TV bound above.
- (c) pure divergence (Laplace): ``p1 > e^{2 eps} p2`` with ``eps = L alpha / b``.

Every radius here is sound for its route (any lambda on the search grid gives a valid radius;
the search only makes it larger). With the noise at the input (L = 1) none can exceed Cohen's
tight Gaussian radius ``sigma/2 (Phi^-1(p1) - Phi^-1(p2))``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm as normal

from lipcert.errors import BadInputError

ORDERS = 1.0 + np.logspace(-3, 3, 241)
"""The grid of Renyi orders lambda > 1 searched before a local golden-section refinement."""

_BISECTIONS = 60


def _probabilities(p1, p2) -> tuple[np.ndarray, np.ndarray]:
    p1 = np.asarray(p1, dtype=np.float64)
    p2 = np.asarray(p2, dtype=np.float64)
    if not (np.all(np.isfinite(p1)) and np.all(np.isfinite(p2))):
        raise BadInputError("probabilities p1, p2 must be finite.")
    if np.any(p1 < 0) or np.any(p1 > 1) or np.any(p2 < 0) or np.any(p2 > 1):
        raise BadInputError("probabilities p1, p2 must lie in [0, 1].")
    if np.any(p1 + p2 > 1 + 1e-12):
        raise BadInputError("p1 + p2 must be <= 1 (two entries of one probability vector).")
    return np.broadcast_arrays(p1, p2)


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise BadInputError(f"{what} must be a positive number, got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise BadInputError(f"{what} must be a positive finite number, got {value!r}.")
    return value


def _order(order) -> np.ndarray:
    order = np.asarray(order, dtype=np.float64)
    if np.any(~(order >= 1)):
        raise BadInputError(f"Renyi orders must be >= 1, got {order}.")
    return order


# --------------------------------------------------------------------------- divergences


def gaussian_renyi(shift_l2, sigma: float, order) -> np.ndarray:
    """``D_lambda(N(Delta, sigma^2 I) || N(0, sigma^2 I)) = lambda ||Delta||^2 / (2 sigma^2)``
    (exact; order 1 is KL, inf gives inf)."""
    sigma = _positive(sigma, "sigma")
    order = _order(order)
    shift = np.asarray(shift_l2, dtype=np.float64)
    return order * shift**2 / (2 * sigma**2)


def laplace_renyi(shift, b: float, order) -> np.ndarray:
    """Per-coordinate Renyi divergence ``f_lambda(|t|)`` between Laplace(t, b) and
    Laplace(0, b) (exact; symmetric in the two laws). ``order`` 1 gives KL, inf ``|t|/b``.
    Sum it over coordinates for a vector shift; ``f_lambda(delta)`` itself is the largest
    divergence over the l1 ball of radius ``delta`` (see the module docstring)."""
    b = _positive(b, "b")
    order = _order(order)
    t = np.abs(np.asarray(shift, dtype=np.float64)) / b
    order, t = np.broadcast_arrays(order, t)
    out = np.empty(t.shape)
    kl = order == 1
    inf = np.isinf(order)
    mid = ~(kl | inf)
    out[kl] = t[kl] + np.expm1(-t[kl])
    out[inf] = t[inf]
    lam, tm = order[mid], t[mid]
    log_terms = np.stack([
        np.log(lam / (2 * lam - 1)) + (lam - 1) * tm,
        np.log((lam - 1) / (2 * lam - 1)) - lam * tm,
    ])
    out[mid] = np.logaddexp(log_terms[0], log_terms[1]) / (lam - 1)
    return np.maximum(out, 0.0)


def renyi_argmax_bound(p1, p2, order) -> np.ndarray:
    """``B_lambda(p1, p2) = min D_lambda(Q || P)`` over Q whose argmax differs from P's, where
    P has top-two entries p1 >= p2 (route (a)); computed in log space (no overflow near 1)."""
    p1, p2 = _probabilities(p1, p2)
    lam = _order(order)
    if np.any(lam == 1):
        raise BadInputError("route (a) needs Renyi orders lambda > 1.")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logs = np.stack(np.broadcast_arrays((1 - lam) * np.log(p1), (1 - lam) * np.log(p2)))
        log_m = (logsumexp(logs, axis=0) - math.log(2.0)) / (1 - lam)
        # lambda -> inf: the power mean tends to min(p1, p2)
        m = np.where(np.isinf(lam), np.minimum(p1, p2), np.exp(log_m))
        rest = 1 - p1 - p2 + 2 * m
        value = -np.log(np.clip(rest, 1e-300, None))
    value = np.where(np.broadcast_to(p1 <= p2, value.shape), 0.0, value)
    return np.maximum(np.nan_to_num(value, nan=0.0, posinf=690.0), 0.0)


def tv_from_kl(kl) -> np.ndarray:
    """Pinot et al.'s bound of the total variation from a KL (or any D_lambda, lambda >= 1,
    which dominates KL): ``min((3/2) sqrt(sqrt(1 + 4 KL/9) - 1), tanh((KL + 1)/2))``."""
    kl = np.asarray(kl, dtype=np.float64)
    first = 1.5 * np.sqrt(np.sqrt(1 + 4 * kl / 9) - 1)
    second = np.tanh((kl + 1) / 2)
    return np.minimum(first, second)


def kl_for_tv(tv) -> np.ndarray:
    """The largest KL whose :func:`tv_from_kl` stays <= ``tv`` (its inverse; 0 at tv = 0)."""
    tv = np.asarray(tv, dtype=np.float64)
    s = 2 * tv / 3
    first = 2.25 * ((1 + s**2) ** 2 - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        second = np.where(tv > math.tanh(0.5), 2 * np.arctanh(np.minimum(tv, 1.0)) - 1, 0.0)
    return np.maximum(np.maximum(first, second), 0.0)


# --------------------------------------------------------------------------- radii


def _golden_refine(radius_of, best: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Vectorized golden-section maximization of ``radius_of(orders)`` inside [lo, hi]
    (starting from the grid's best); returns (radius, order)."""
    ratio = (math.sqrt(5) - 1) / 2
    best_r = radius_of(best)
    a, c = lo.copy(), hi.copy()
    for _ in range(30):
        x1 = c - ratio * (c - a)
        x2 = a + ratio * (c - a)
        r1, r2 = radius_of(x1), radius_of(x2)
        left = r1 >= r2
        c = np.where(left, x2, c)
        a = np.where(left, a, x1)
        for x, r in ((x1, r1), (x2, r2)):
            better = r > best_r
            best_r = np.where(better, r, best_r)
            best = np.where(better, x, best)
    return best_r, best


def _maximize_over_orders(radius_of, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``radius_of(orders)`` over lambda in (1, inf]: a grid search with a local
    golden-section refinement, compared with the lambda = inf limit. ``radius_of`` maps an
    array of orders broadcastable to ``shape`` to radii."""
    grid = ORDERS.reshape((-1,) + (1,) * len(shape))
    radii = radius_of(np.broadcast_to(grid, grid.shape[:1] + shape))
    index = np.argmax(radii, axis=0)
    best = ORDERS[index]
    lo = ORDERS[np.maximum(index - 1, 0)]
    hi = ORDERS[np.minimum(index + 1, len(ORDERS) - 1)]
    radius, order = _golden_refine(radius_of, best, lo, hi)
    at_inf = radius_of(np.full(shape, np.inf))
    order = np.where(at_inf > radius, np.inf, order)
    radius = np.maximum(radius, at_inf)
    return np.maximum(radius, 0.0), order


def gaussian_renyi_radius(p1, p2, sigma: float, lipschitz: float = 1.0):
    """Route (a) for Gaussian noise: ``sup_lambda sqrt(2 sigma^2 B_lambda / lambda) / L``
    (l2 radius). Returns ``(radius, best_order)`` arrays."""
    p1, p2 = _probabilities(p1, p2)
    sigma, lipschitz = _positive(sigma, "sigma"), _positive(lipschitz, "lipschitz")

    def radius_of(order):
        bound = renyi_argmax_bound(p1, p2, order)
        with np.errstate(invalid="ignore"):
            value = np.sqrt(2 * sigma**2 * bound / order) / lipschitz
        return np.where(np.isinf(order), 0.0, value)

    return _maximize_over_orders(radius_of, p1.shape)


def gaussian_tv_radius(p1, p2, sigma: float, lipschitz: float = 1.0) -> np.ndarray:
    """Route (b) for Gaussian noise: the l2 radius whose KL ``L^2 alpha^2 / (2 sigma^2)``
    keeps ``2 tv_from_kl(KL) < p1 - p2``."""
    p1, p2 = _probabilities(p1, p2)
    sigma, lipschitz = _positive(sigma, "sigma"), _positive(lipschitz, "lipschitz")
    kl = kl_for_tv(np.clip((p1 - p2) / 2, 0.0, 1.0))
    return np.sqrt(2 * sigma**2 * kl) / lipschitz


def _invert_increasing(f, target: np.ndarray, high: float) -> np.ndarray:
    """Largest t in [0, high] with f(t) < target, by bisection (f increasing, f(0) = 0);
    the lower end is returned, so f(result) < target holds (0 when target <= 0)."""
    lo = np.zeros_like(target)
    hi = np.full_like(target, high)
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        ok = f(mid) < target
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return np.where(target > 0, lo, 0.0)


def _laplace_f(t: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``f_lambda(t b) `` for finite orders > 1 (t in units of b), without input checks."""
    first = np.log(lam / (2 * lam - 1)) + (lam - 1) * t
    second = np.log((lam - 1) / (2 * lam - 1)) - lam * t
    return np.logaddexp(first, second) / (lam - 1)


def laplace_renyi_radius(p1, p2, b: float, lipschitz: float = 1.0):
    """Route (a) for Laplace noise of scale ``b``: the l1 radius ``f_lambda^{-1}(B_lambda) / L``
    maximized over lambda (at lambda = inf, ``b B_inf / L``: Teng et al.'s l1 radius when
    p2 = 1 - p1). Returns ``(radius, best_order)``."""
    p1, p2 = _probabilities(p1, p2)
    b, lipschitz = _positive(b, "b"), _positive(lipschitz, "lipschitz")

    def radius_of(order):
        target = renyi_argmax_bound(p1, p2, order)
        finite = np.where(np.isinf(order), 2.0, order)
        high = float(np.max(target, initial=0.0)) * 4 + 50
        shift = _invert_increasing(lambda t: _laplace_f(t, finite), target, high)
        return b * np.where(np.isinf(order), target, shift) / lipschitz

    return _maximize_over_orders(radius_of, p1.shape)


def laplace_tv_radius(p1, p2, b: float, lipschitz: float = 1.0) -> np.ndarray:
    """Route (b) for Laplace noise: the l1 radius whose KL ``f_1(L alpha)`` keeps
    ``2 tv_from_kl(KL) < p1 - p2``."""
    p1, p2 = _probabilities(p1, p2)
    b, lipschitz = _positive(b, "b"), _positive(lipschitz, "lipschitz")
    kl = kl_for_tv(np.clip((p1 - p2) / 2, 0.0, 1.0))
    shift = _invert_increasing(lambda t: laplace_renyi(t, b, 1.0), kl, b * (float(kl.max(
        initial=0.0)) + 50))
    return shift / lipschitz


def laplace_pure_radius(p1, p2, b: float, lipschitz: float = 1.0) -> np.ndarray:
    """Route (c) for Laplace noise: ``b ln(p1 / p2) / (2 L)`` (l1 radius), from the
    max-divergence ``L alpha / b`` and ``p1 > e^{2 eps} p2``; inf when p2 = 0."""
    p1, p2 = _probabilities(p1, p2)
    b, lipschitz = _positive(b, "b"), _positive(lipschitz, "lipschitz")
    with np.errstate(divide="ignore"):
        value = b * (np.log(p1) - np.log(p2)) / (2 * lipschitz)
    return np.maximum(np.nan_to_num(value, nan=0.0), 0.0)


def uniform_tv_radius(p1, p2, a: float, lipschitz: float = 1.0) -> np.ndarray:
    """TV route for uniform noise on ``[-a, a]^d``: ``TV <= L alpha / (2a)``, so the l1 radius
    is ``a (p1 - p2) / L`` (with the noise at the input and p2 = 1 - p1 this is the known
    uniform-cube l1 radius ``2a (p1 - 1/2)``)."""
    p1, p2 = _probabilities(p1, p2)
    a, lipschitz = _positive(a, "a"), _positive(lipschitz, "lipschitz")
    return np.maximum(a * (p1 - p2), 0.0) / lipschitz


def cohen_ceiling(p1, p2, sigma: float) -> np.ndarray:
    """Cohen et al.'s tight Gaussian l2 radius ``sigma/2 (Phi^-1(p1) - Phi^-1(p2))`` with the
    noise at the input and a separate bound on the runner-up (arXiv 1902.02918, Theorem 1);
    the sanity ceiling of every route. With p2 = 1 - p1 it is
    :func:`lipcert.certify.cohen_radius` ``(p1, sigma)``."""
    p1, p2 = _probabilities(p1, p2)
    sigma = _positive(sigma, "sigma")
    return np.maximum(sigma / 2 * (normal.ppf(p1) - normal.ppf(p2)), 0.0)
