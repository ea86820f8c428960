"""Spectral norm of a dense matrix: exact SVD, power iteration, Gram iteration.

| method  | guarantee | reference |
|---------|-----------|-----------|
| exact   | exact     | ``torch.linalg.matrix_norm(ord=2)`` (SVD) |
| power   | estimate  | power iteration, Miyato et al. 2018 (arXiv 1802.05957) |
| gram    | upper     | Gram iteration, Delattre et al. 2023 (arXiv 2305.16173) |
"""

from __future__ import annotations

import torch

from lipcert.errors import BadInputError, check_finite
from lipcert.linalg.checks import check_iterations, check_options, unknown_method
from lipcert.linalg.gram import gram_iterate, gram_schatten_bound
from lipcert.linalg.power import PowerIterationState, power_iteration
from lipcert.linalg.result import NormBound
from lipcert.linalg.scaling import normalize, restore_bound

__all__ = ["DENSE_METHODS", "dense_norm", "DEFAULT_GRAM_ITERATIONS", "DEFAULT_POWER_ITERATIONS"]

DENSE_METHODS: tuple[str, ...] = ("exact", "power", "gram")
DEFAULT_GRAM_ITERATIONS = 10
DEFAULT_POWER_ITERATIONS = 100


def _check_matrix(weight: torch.Tensor) -> None:
    check_finite(weight, "weight")
    if weight.dim() != 2:
        raise BadInputError(
            f"dense_norm expects a 2-D weight matrix, got shape {tuple(weight.shape)}; "
            "use conv_norm for convolution kernels or reshape explicitly."
        )
    if weight.is_complex() or not weight.is_floating_point():
        raise BadInputError(f"dense_norm expects a real floating-point weight, got {weight.dtype}.")


def dense_norm(weight: torch.Tensor, method: str = "gram", **options) -> NormBound:
    """Spectral norm (largest singular value) of a real matrix ``weight`` of shape ``(m, n)``.

    Methods (see :data:`DENSE_METHODS`):

    - ``"exact"``: SVD; guarantee ``exact``; differentiable.
    - ``"gram"`` (default): Gram iteration with ``n_iter`` steps (default 10), rescaled each
      step with the scale in log space (arXiv 2305.16173). The value is the Schatten-
      ``2^(n_iter+1)`` norm: guarantee ``upper``; differentiable.
    - ``"power"``: ``n_iter`` power-iteration steps (default 100) from a random start
      (``seed``, default 0) or from a persistent :class:`PowerIterationState` (``state``),
      which is updated in place. Guarantee ``estimate``: at most the true norm.

    Every method runs on ``weight`` scaled by an exact power of two (largest entry in
    ``[0.5, 1)``, see :mod:`lipcert.linalg.scaling`), so subnormal weights and weights near
    the dtype's maximum are fine; float16/bfloat16 weights are computed in float32 and the
    value is float32. Sound values are rounded up when scaled back.

    Raises:
        BadInputError: NaN/Inf entries, not a 2-D real matrix, unknown method or option, a
            norm beyond the dtype's largest number.
    """
    _check_matrix(weight)
    scaled, exponent = normalize(weight)
    return restore_bound(_dense_method(scaled, method, options), exponent)


def _dense_method(weight: torch.Tensor, method: str, options: dict) -> NormBound:
    """:func:`dense_norm` on a weight whose largest entry is in ``[0.5, 1)``."""
    if method == "exact":
        check_options(method, options, ())
        return NormBound(torch.linalg.matrix_norm(weight, ord=2), "exact", "svd")
    if method == "gram":
        check_options(method, options, ("n_iter",))
        n_iter = check_iterations(options.get("n_iter", DEFAULT_GRAM_ITERATIONS))
        gram, log_scale = gram_iterate(weight, n_iter)
        return NormBound(gram_schatten_bound(gram, log_scale, n_iter), "upper", "gram", n_iter)
    if method == "power":
        check_options(method, options, ("n_iter", "seed", "state"))
        n_iter = check_iterations(options.get("n_iter", DEFAULT_POWER_ITERATIONS))
        state: PowerIterationState | None = options.get("state")

        def apply(vec: torch.Tensor) -> torch.Tensor:
            return weight @ vec

        def adjoint(vec: torch.Tensor) -> torch.Tensor:
            return weight.mT @ vec

        if state is not None:
            state.check_shape((weight.shape[1],))
            value = state.run(apply, adjoint, n_iter, weight)
        else:
            generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
            start = torch.randn(weight.shape[1], generator=generator, dtype=weight.dtype)
            value, _ = power_iteration(apply, adjoint, start.to(weight.device), n_iter)
        return NormBound(value, "estimate", "power", n_iter)
    raise unknown_method(method, DENSE_METHODS, "dense")
