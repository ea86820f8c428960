"""Exact binomial confidence bounds for randomized-smoothing certificates.

One-sided Clopper-Pearson (1934) bounds, as used by Cohen et al. 2019 (arXiv 1902.02918):
``P(p < lower(K, n, alpha)) <= alpha`` and ``P(p > upper(K, n, alpha)) <= alpha`` for
``K ~ Binomial(n, p)`` and every ``p``. The lower bound is the ``alpha`` quantile of
``Beta(k, n - k + 1)`` (0 when ``k = 0``; exactly ``alpha ** (1 / n)`` when ``k = n``), the upper
bound the ``1 - alpha`` quantile of ``Beta(k + 1, n - k)`` (1 when ``k = n``; exactly
``1 - alpha ** (1 / n)`` when ``k = 0``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from lipcert.errors import BadInputError

__all__ = ["clopper_pearson_lower", "clopper_pearson_upper"]


def _as_counts(k, n, alpha) -> tuple[np.ndarray, np.ndarray, float, bool]:
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    try:
        k_arr = np.asarray(k)
        n_arr = np.asarray(n)
    except Exception as exc:  # pragma: no cover - numpy accepts nearly everything
        raise BadInputError(f"Clopper-Pearson: k and n must be integer arrays ({exc}).") from None
    for name, arr in (("k", k_arr), ("n", n_arr)):
        if arr.dtype == bool or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise BadInputError(
                f"Clopper-Pearson: {name} must hold integer counts, got {arr.dtype}."
            )
        if np.issubdtype(arr.dtype, np.floating) and (
            not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))
        ):
            raise BadInputError(f"Clopper-Pearson: {name} must hold whole-number counts.")
    k_arr = k_arr.astype(np.int64)
    n_arr = n_arr.astype(np.int64)
    if isinstance(alpha, bool) or not np.isscalar(alpha) or not np.isfinite(alpha):
        raise BadInputError(f"Clopper-Pearson: alpha must be a number in (0, 1), got {alpha!r}.")
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise BadInputError(f"Clopper-Pearson: alpha must lie in (0, 1), got {alpha}.")
    try:
        k_arr, n_arr = np.broadcast_arrays(k_arr, n_arr)
    except ValueError:
        raise BadInputError(
            f"Clopper-Pearson: k {k_arr.shape} and n {n_arr.shape} do not broadcast."
        ) from None
    if np.any(n_arr < 1):
        raise BadInputError("Clopper-Pearson: n must be >= 1 (the number of samples).")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise BadInputError("Clopper-Pearson: every count k must satisfy 0 <= k <= n.")
    return k_arr, n_arr, alpha, scalar


def _clopper_pearson(k, n, alpha: float, upper: bool):
    """The one-sided bound of both public functions: a Beta quantile for 0 < k < n, closed
    forms at the edges (lower: 0 at k = 0, ``alpha**(1/n)`` at k = n, since Beta(n, 1) has CDF
    ``p**n``; upper: 1 at k = n, ``1 - alpha**(1/n)`` at k = 0, by ``expm1`` for accuracy)."""
    k_arr, n_arr, alpha, scalar = _as_counts(k, n, alpha)
    kf = k_arr.astype(np.float64)
    nf = n_arr.astype(np.float64)
    out = np.full(k_arr.shape, 1.0 if upper else 0.0, dtype=np.float64)
    mid = (k_arr > 0) & (k_arr < n_arr)
    if np.any(mid):
        out[mid] = (beta.ppf(1.0 - alpha, kf[mid] + 1.0, nf[mid] - kf[mid]) if upper
                    else beta.ppf(alpha, kf[mid], nf[mid] - kf[mid] + 1.0))
    edge = (k_arr == 0) if upper else (k_arr == n_arr)
    out[edge] = (-np.expm1(np.log(alpha) / nf[edge]) if upper
                 else np.power(alpha, 1.0 / nf[edge]))
    return float(out) if scalar else out


def clopper_pearson_lower(k, n, alpha: float):
    """One-sided ``1 - alpha`` lower confidence bound on a binomial proportion.

    Vectorized over array-like ``k`` and ``n``; scalar inputs give a Python float.
    """
    return _clopper_pearson(k, n, alpha, upper=False)


def clopper_pearson_upper(k, n, alpha: float):
    """One-sided ``1 - alpha`` upper confidence bound on a binomial proportion.

    Vectorized over array-like ``k`` and ``n``; scalar inputs give a Python float.
    """
    return _clopper_pearson(k, n, alpha, upper=True)
