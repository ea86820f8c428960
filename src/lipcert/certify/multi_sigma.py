"""The several-distribution Gaussian certificate (Ettedgui, Araujo, Pinot, Chevaleyre, Atif 2022,
arXiv 2206.01715), solved exactly by one-dimensional quadrature.

Problem. Given lower bounds ``a0 <= P(f(x + sigma0 Z) = A)`` and ``a1 <= P(f(x + sigma1 Z) = A)``
(same centre, same class), the worst case of ``P(f(x + delta + sigma0 Z) = A)`` over every base
classifier consistent with them, at ``||delta||_2 = eps``, is ``m(eps) = inf_h E_q[h]`` subject to
``E_{p_i}[h] >= a_i``. By the generalized Neyman-Pearson lemma, for multipliers ``lambda_i >= 0``
the set ``S = {q < lambda0 p0 + lambda1 p1}`` gives ``m(eps) >= Q(S)`` as soon as
``P_i(S) <= a_i`` for every ``i`` with ``lambda_i > 0`` (proof: ``(h - 1_S)(q - sum lambda_i p_i)
>= 0`` pointwise). All densities are isotropic about ``x`` except ``q``'s shift along
``u = delta / eps``, so writing ``z - x = t u + w`` with ``s = ||w||^2``, the probability of ``S``
under each law is a one-dimensional integral over ``t`` of a chi-square CDF in ``s`` (exact, no
approximation of the dimension). Multipliers come from nested root finding; the bound is
re-evaluated with four times the quadrature panels, constraints are checked with the
discrepancy added, and ``Q`` is reported with it subtracted.

A radius must hold for all ``||delta|| <= R``, not only at ``R``: ``sigma0 Phi^-1(P_{x+delta}(A))``
is 1-Lipschitz in ``delta`` (Salman et al. 2019, arXiv 1906.04584), so if
``m(eps_j) > Phi(h_j / sigma0)`` the class is kept for ``||delta|| in [eps_j, eps_j + h_j]``.
Starting at Cohen's radius (Cohen covers every smaller norm), the walk
``eps_{j+1} = eps_j + sigma0 Phi^-1(m(eps_j))`` certifies ``[0, eps_J]``.

More than one probe: each probe gives a two-distribution certificate valid under the same
confidence event; the largest is returned (sound, possibly weaker than the joint problem).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincc, ndtr, ndtri

from lipcert.errors import BadInputError

__all__ = ["multi_sigma_radius", "worst_case_set", "WorstCaseSet", "closed_form_inactive"]

_U_MAX = 12.0  # quadrature range in standard units; the mass beyond is Phi(-12) = 1.8e-33
_PANELS, _NODES = 24, 48
_ETA = 1e-8  # solve against a_i - eta
_TAIL = float(ndtr(-_U_MAX))
_LOG_NEG_INF = -math.inf

_GL_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    if nodes not in _GL_CACHE:
        _GL_CACHE[nodes] = np.polynomial.legendre.leggauss(nodes)
    return _GL_CACHE[nodes]


def closed_form_inactive(sigma0: float, sigma1: float, a0: float, a1: float) -> bool:
    """True when Cohen's half-space already meets the probe constraint:
    ``Phi(sigma0 Phi^-1(a0) / sigma1) >= a1``; the extra probe then adds nothing at any radius."""
    return bool(ndtr(sigma0 * ndtri(a0) / sigma1) >= a1)


class _Problem:
    """Probabilities of the Neyman-Pearson set ``S(l0, l1)`` at one ``eps``."""

    def __init__(self, sigma0: float, sigma1: float, dim: int, eps: float, panels: int) -> None:
        self.s0, self.s1, self.d, self.eps = sigma0, sigma1, dim, eps
        self.gamma = 0.5 * (1.0 / sigma1**2 - 1.0 / sigma0**2)
        self.k = 0.5 * (dim - 1)  # chi-square_{d-1} is Gamma(k, 2)
        x, w = _gauss_legendre(_NODES)
        self.panels = panels
        self._x, self._w = x, w

    def _nodes(self, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        edges = np.linspace(lo, hi, self.panels + 1)
        half = 0.5 * np.diff(edges)
        mid = 0.5 * (edges[1:] + edges[:-1])
        u = (mid[:, None] + half[:, None] * self._x[None, :]).ravel()
        wt = (half[:, None] * self._w[None, :]).ravel()
        return u, wt

    def t0(self, l0: float) -> float:
        if l0 == _LOG_NEG_INF:
            return -math.inf
        return self.s0**2 * l0 / self.eps + 0.5 * self.eps

    def prob(self, which: str, l0: float, l1: float) -> float:
        """P(S) under ``which`` in {"p0", "p1", "q"}, with the quadrature error left in."""
        mu, sig_t, sig_s = {"p0": (0.0, self.s0, self.s0), "p1": (0.0, self.s1, self.s1),
                            "q": (self.eps, self.s0, self.s0)}[which]
        t0 = self.t0(l0)
        u0 = (t0 - mu) / sig_t
        head = float(ndtr(u0)) if math.isfinite(u0) else 0.0
        lo = max(u0, -_U_MAX)
        if lo >= _U_MAX:
            return head
        u, wt = self._nodes(lo, _U_MAX)
        t = mu + sig_t * u
        eps, s0 = self.eps, self.s0
        big_l = (eps * t - 0.5 * eps * eps) / s0**2
        if l0 == _LOG_NEG_INF:
            m = big_l
        else:
            with np.errstate(divide="ignore"):
                m = big_l + np.log(-np.expm1(np.minimum(l0 - big_l, 0.0)))
        g = self.gamma
        if l1 == _LOG_NEG_INF:
            cond = np.zeros_like(t)  # lambda1 = 0: nothing beyond t0 is in S
        elif g < 0:
            s_star = (m - l1 + g * t * t) / (-g)
            cond = gammaincc(self.k, np.maximum(s_star, 0.0) / (2.0 * sig_s**2))
        else:
            s_star = (l1 - m - g * t * t) / g
            cond = gammainc(self.k, np.maximum(s_star, 0.0) / (2.0 * sig_s**2))
        dens = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
        return head + float(np.sum(wt * dens * cond))


@dataclass
class WorstCaseSet:
    """The Neyman-Pearson set at ``eps``: ``z - x = t u + w`` is in it iff
    ``exp(L(t)) < exp(l0) + exp(l1 - gamma (t^2 + ||w||^2))`` with
    ``L(t) = (eps t - eps^2/2) / sigma0^2``, ``gamma = (1/sigma1^2 - 1/sigma0^2) / 2``.
    ``l0 = log lambda0``, ``l1 = log lambda1 + dim log(sigma0 / sigma1)``; -inf means 0.

    ``p0``, ``p1`` are upper bounds on its probabilities under ``N(x, sigma_i^2 I)`` and
    ``q`` a lower bound under ``N(x + eps u, sigma0^2 I)`` (quadrature error included).
    """

    sigma0: float
    sigma1: float
    dim: int
    eps: float
    l0: float
    l1: float
    p0: float
    p1: float
    q: float

    def contains(self, t: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Membership of points given by their projection ``t`` and ``s = ||w||^2``."""
        big_l = (self.eps * t - 0.5 * self.eps**2) / self.sigma0**2
        gamma = 0.5 * (1.0 / self.sigma1**2 - 1.0 / self.sigma0**2)
        rhs = np.logaddexp(self.l0, self.l1 - gamma * (t * t + s))
        return big_l < rhs


def _solve_l0(prob: _Problem, l1: float, target0: float) -> float:
    """``l0`` with ``P0(S) = target0`` for this ``l1`` (``-inf`` when even ``l0 = -inf``
    exceeds it)."""
    if l1 != _LOG_NEG_INF and prob.prob("p0", _LOG_NEG_INF, l1) >= target0:
        return _LOG_NEG_INF
    eps, s0 = prob.eps, prob.s0
    # Work with t0 (the head boundary); l0 = (t0 - eps/2) eps / s0^2 is increasing in t0.
    def l0_of(t0: float) -> float:
        return (t0 - 0.5 * eps) * eps / s0**2

    def f(t0: float) -> float:
        return prob.prob("p0", l0_of(t0), l1) - target0

    hi = s0 * float(ndtri(target0))  # Cohen's boundary: lambda1 >= 0 only enlarges S
    if f(hi) < 0:  # numerical corner: the set is already too small; keep the Cohen boundary
        return l0_of(hi)
    step, lo = s0, hi - s0
    while f(lo) >= 0:
        step *= 2.0
        lo = hi - step
        if step > 80 * s0:
            return _LOG_NEG_INF
    return l0_of(brentq(f, lo, hi, xtol=1e-12 * s0, rtol=1e-12, maxiter=200))


def _solve(prob: _Problem, target0: float, target1: float,
           l1_guess: float | None) -> tuple[float, float]:
    """Multipliers ``(l0, l1)`` with ``P0 = target0`` and ``P1 = target1`` (as close as the
    bracket allows, never above)."""
    def g(l1: float) -> float:
        return prob.prob("p1", _solve_l0(prob, l1, target0), l1) - target1

    d, s0, s1 = prob.d, prob.s0, prob.s1
    if l1_guess is None:
        t_c = s0 * float(ndtri(target0))
        l0_c = (t_c - 0.5 * prob.eps) * prob.eps / s0**2
        typical = t_c**2 + (d - 1) * s1**2
        l1_guess = l0_c + prob.gamma * typical
    step = 1.0
    a, ga = l1_guess, g(l1_guess)
    if ga < 0:
        b = a + step
        gb = g(b)
        while gb < 0:
            a, ga = b, gb
            step *= 2.0
            b = a + step
            if step > 1e4:
                return _solve_l0(prob, a, target0), a  # P1 stays below target: still feasible
            gb = g(b)
    else:
        b, gb = a, ga
        a = b - step
        ga = g(a)
        while ga >= 0:
            b, gb = a, ga
            step *= 2.0
            a = b - step
            if step > 1e4:  # lambda1 -> 0 already meets the probe: Cohen's half-space
                return _solve_l0(prob, _LOG_NEG_INF, target0), _LOG_NEG_INF
            ga = g(a)
    l1 = brentq(g, a, b, xtol=1e-10, rtol=1e-12, maxiter=200)
    return _solve_l0(prob, l1, target0), l1


def worst_case_set(sigma0: float, sigma1: float, a0: float, a1: float, dim: int, eps: float,
                   *, _l1_guess: float | None = None) -> WorstCaseSet | None:
    """The Neyman-Pearson set at ``||delta|| = eps`` with verified probabilities, or None when
    no verified set is found (the caller must then not certify at ``eps``)."""
    eta = _ETA
    for _ in range(4):
        coarse = _Problem(sigma0, sigma1, dim, eps, _PANELS)
        l0, l1 = _solve(coarse, a0 - eta, a1 - eta, _l1_guess)
        fine = _Problem(sigma0, sigma1, dim, eps, 4 * _PANELS)
        p = {w: (coarse.prob(w, l0, l1), fine.prob(w, l0, l1)) for w in ("p0", "p1", "q")}
        err = {w: abs(c - f_) + 2 * _TAIL + 1e-13 for w, (c, f_) in p.items()}
        up0 = p["p0"][1] + err["p0"]
        up1 = p["p1"][1] + err["p1"]
        ok0 = l0 == _LOG_NEG_INF or up0 <= a0
        ok1 = l1 == _LOG_NEG_INF or up1 <= a1
        if ok0 and ok1:
            return WorstCaseSet(sigma0, sigma1, dim, eps, l0, l1, up0, up1,
                                p["q"][1] - err["q"])
        eta = 4.0 * max(eta, err["p0"], err["p1"])
    return None


def _cohen(a0: float, sigma0: float) -> float:
    from lipcert.certify.smoothing import cohen_radius

    return cohen_radius(a0, sigma0)


def _two_sigma_radius(sigma0: float, sigma1: float, a0: float, a1: float, dim: int,
                      cohen: float, tol: float, max_steps: int) -> float:
    if a1 <= 0.0 or dim < 2 or closed_form_inactive(sigma0, sigma1, a0, a1):
        return cohen
    if cohen <= 0.0:  # the walk starts where Cohen's certificate ends; it must cover [0, eps)
        return cohen
    eps, guess = cohen, None
    for _ in range(max_steps):
        wc = worst_case_set(sigma0, sigma1, a0, a1, dim, eps, _l1_guess=guess)
        if wc is None or not wc.q > 0.5:
            break
        step = sigma0 * float(ndtri(wc.q)) * (1.0 - 1e-9)
        if not step > 0:
            break
        eps = eps + step
        guess = wc.l1 if math.isfinite(wc.l1) else None
        if step < tol:
            break
    return eps if eps > cohen else cohen


def multi_sigma_radius(sigma0: float, sigmas: Sequence[float], p_lowers: Sequence[float],
                       dim: int, *, tol: float | None = None, max_steps: int = 60) -> float:
    """Certified l2 radius of the Gaussian smoothed classifier at ``sigma0`` using probes.

    Args:
        sigma0: standard deviation of the smoothed classifier being certified.
        sigmas: the probe standard deviations (other than ``sigma0``; same centre and class).
        p_lowers: ``p_lowers[0]`` lower-bounds the class probability under ``sigma0`` and
            ``p_lowers[1:]`` those under ``sigmas`` (all holding together, e.g. Bonferroni).
        dim: input dimension ``d``.
        tol: stop the radius walk once a step is below ``tol`` (default ``1e-4 sigma0``).

    Returns ``max(Cohen, multi)``: exactly Cohen's radius (bit for bit) when no probe is given,
    ``p_lowers[0] < 1/2``, or the closed-form check says a probe adds nothing. Valid for every
    ``||delta||_2`` below it (module docstring: quadrature margins and the 1-Lipschitz walk).
    """
    from lipcert.noise import check_noise

    _, sigma0 = check_noise("gaussian", sigma0)
    probes = [check_noise("gaussian", s)[1] for s in sigmas]
    p = np.asarray(p_lowers, dtype=np.float64).ravel()
    if p.size != 1 + len(probes):
        raise BadInputError(
            f"p_lowers must hold 1 + len(sigmas) = {1 + len(probes)} values (sigma0 first), "
            f"got {p.size}."
        )
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise BadInputError("p_lowers must be probabilities in [0, 1].")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise BadInputError(f"dim must be a positive integer (the input dimension), got {dim!r}.")
    if any(s == sigma0 for s in probes):
        raise BadInputError(f"sigmas must differ from sigma0={sigma0}.")
    a0 = float(p[0])
    cohen = _cohen(a0, sigma0)
    if a0 < 0.5 or not probes:
        return cohen
    tol = 1e-4 * sigma0 if tol is None else float(tol)
    best = cohen
    for s1, a1 in zip(probes, p[1:], strict=True):
        best = max(best, _two_sigma_radius(sigma0, s1, a0, float(a1), int(dim), cohen, tol,
                                           max_steps))
    return best
