"""Gram iteration: the rescaled, batched core shared by dense and per-frequency bounds.

Delattre, Barthelemy, Araujo, Allauzen, "Efficient Bound of Lipschitz Constant for
Convolutional Layers by Gram Iteration", ICML 2023 (arXiv 2305.16173).

For a matrix ``W`` let ``G_0 = W`` and ``G_{t+1} = G_t^H G_t``. Then
``||G_t||_F^(2^-t)`` is the Schatten-``2^(t+1)`` norm of ``W``: an upper bound on
``sigma_1(W)`` that never increases with ``t`` and exceeds ``sigma_1`` by at most the
factor ``rank^(2^-(t+1))``. Every step divides ``G_t`` by its Frobenius norm ``f_t`` and keeps
``r_{t+1} = 2 (r_t + log f_t)`` in log space, so that
``sigma_1(W)^(2^t) = sigma_1(G_t) exp(r_t)`` holds without overflow or underflow. The input is
first multiplied by an exact power of two so that its largest entry is in ``[0.5, 1)`` (the
exponent goes into ``r_0``), so subnormal weights and weights near the dtype's maximum work
too. Operations are out of place, so autograd sees them.
"""

from __future__ import annotations

import math

import torch

from lipcert.linalg.scaling import binary_exponent, scale_by_power_of_two

__all__ = ["gram_iterate", "gram_schatten_bound", "safe_log", "gram_power_lower_bound"]


_LN2 = math.log(2.0)


def _real_view(mat: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``mat`` as a real tensor (complex entries as a trailing pair, no copy) and the dims
    holding one matrix. Complex reductions and divisions are several times slower than real
    ones on CPU, so norms and rescaling work on this view."""
    if mat.is_complex():
        return torch.view_as_real(mat.resolve_conj()), (-3, -2, -1)
    return mat, (-2, -1)


def _frobenius(mat: torch.Tensor, shared: bool) -> torch.Tensor:
    """Frobenius norm of every matrix in the batch, or one norm over the whole batch.

    Computed as ``m ||mat / m||_F`` with ``m`` the (detached) largest real or imaginary part,
    so squares neither overflow near 1e30 nor underflow near 1e-30 in float32; ``m`` cancels
    exactly in value and gradient because the norm is 1-homogeneous.
    """
    real, matrix_dims = _real_view(mat)
    dims = None if shared else matrix_dims
    largest = real.detach().abs().amax(dim=dims, keepdim=True)
    largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    norm = torch.linalg.vector_norm(real * (1.0 / largest), dim=dims, keepdim=True) * largest
    return norm.reshape(()) if shared else norm.reshape(mat.shape[:-2])


def _divide(mat: torch.Tensor, norm: torch.Tensor, shared: bool) -> torch.Tensor:
    """``mat`` divided by one positive norm per matrix (or one for the batch), via the real
    view for complex batches."""
    real, matrix_dims = _real_view(mat)
    scale = 1.0 / (norm if shared else norm.reshape(*norm.shape, *(1,) * len(matrix_dims)))
    scaled = real * scale
    return torch.view_as_complex(scaled) if mat.is_complex() else scaled


def safe_log(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(value) where value > 0 else 0, value > 0)``; NaN-free in the backward pass."""
    positive = value > 0
    return torch.log(torch.where(positive, value, torch.ones_like(value))), positive


def gram_iterate(
    mat: torch.Tensor,
    n_iter: int,
    log_scale: torch.Tensor | None = None,
    *,
    shared_scale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``n_iter`` rescaled Gram steps on a batch of matrices ``(..., m, n)``.

    Args:
        mat: real or complex batch of matrices. Tall/wide is handled by taking the Gram
            matrix on the smaller side.
        n_iter: number of Gram steps (0 returns the input unchanged).
        log_scale: log-scale carried over from earlier steps (to continue an iteration);
            zeros when None.
        shared_scale: divide the whole batch by ONE Frobenius norm instead of one per matrix
            (needed when the batch represents a single operator whose entries must keep
            their relative sizes, as in the kernel bound of arXiv 2402.00240).

    Returns:
        ``(gram, log_scale)`` with ``sigma_1(mat)^(2^n_iter) = sigma_1(gram) * exp(log_scale)``
        for each matrix of the batch (``log_scale`` has the batch shape, or is 0-dim when
        ``shared_scale``).
    """
    if mat.shape[-2] < mat.shape[-1]:
        mat = mat.mH
    if log_scale is None:
        shape = () if shared_scale else mat.shape[:-2]
        log_scale = torch.zeros(shape, dtype=torch.float64, device=mat.device)
    if n_iter > 0:
        # Exact power-of-two prescale: subnormal entries (whose reciprocal overflows) and
        # entries near the dtype's maximum (whose squares overflow) become O(1).
        exponent = binary_exponent(mat, None if shared_scale else (-2, -1))
        mat = scale_by_power_of_two(mat, -exponent)
        log_scale = log_scale + exponent.reshape(log_scale.shape).to(torch.float64) * _LN2
    for _ in range(n_iter):
        log_norm, positive = safe_log(_frobenius(mat, shared_scale))
        norm = torch.where(positive, torch.exp(log_norm), torch.ones_like(log_norm))
        mat = _divide(mat, norm, shared_scale)
        # float64: r_t reaches 2^t |log f| (1e5 for norms near 1e20 after 10 steps), where a
        # float32 ulp is 1e-2, i.e. a relative error of 1e-5 in the bound after the root.
        log_scale = 2.0 * (log_scale + log_norm.to(torch.float64))
        mat = mat.mH @ mat
    return mat, log_scale


def gram_schatten_bound(gram: torch.Tensor, log_scale: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Upper bound ``(||G_t||_F exp(r_t))^(2^-t)`` for each matrix of the batch.

    Equals the Schatten-``2^(t+1)`` norm of the original matrix; 0 for a zero matrix (with a
    finite, zero gradient there).
    """
    log_norm, positive = safe_log(_frobenius(gram, shared=False))
    value = scaled_root(log_norm, log_scale, n_iter, gram.real.dtype)
    return torch.where(positive, value, torch.zeros_like(value))


def scaled_root(log_value: torch.Tensor, log_scale: torch.Tensor, n_iter: int,
                dtype: torch.dtype) -> torch.Tensor:
    """``exp((log_value + log_scale) / 2^n_iter)`` computed in float64 (the log-scale is
    float64), then cast to ``dtype`` rounding UP, so an upper bound stays one after the cast.
    Differentiable."""
    exact = torch.exp((log_value.to(torch.float64) + log_scale) / 2.0**n_iter)
    cast = exact.to(dtype)
    if dtype != torch.float64:
        below = cast.detach().to(torch.float64) < exact.detach()
        up = torch.nextafter(cast.detach(), torch.full_like(cast.detach(), math.inf))
        cast = cast + (torch.where(below, up, cast.detach()) - cast.detach())
    return cast


@torch.no_grad()
def gram_power_lower_bound(
    gram: torch.Tensor, log_scale: torch.Tensor, n_iter: int, n_power: int = 3
) -> torch.Tensor:
    """Lower bound on ``sigma_1`` of the ORIGINAL matrices from a few products with ``G_t``.

    ``G_t`` (``t >= 1``) is Hermitian positive semi-definite, so ``||G_t v|| / ||v||`` is at
    most ``sigma_1(G_t)`` for any ``v``; it starts from the column of largest norm. Detached:
    used to prune frequencies, never as a returned value.
    """
    if n_iter < 1:
        raise ValueError("gram_power_lower_bound needs at least one Gram step")
    column_norms = torch.linalg.vector_norm(gram, dim=-2)
    best = column_norms.argmax(dim=-1)
    vec = torch.gather(gram, -1, best[..., None, None].expand(*gram.shape[:-1], 1))
    estimate = column_norms.amax(dim=-1)
    for _ in range(n_power):
        norm = torch.linalg.vector_norm(vec, dim=(-2, -1))
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        vec = vec / safe[..., None, None]
        vec = gram @ vec
        estimate = torch.maximum(estimate, torch.linalg.vector_norm(vec, dim=(-2, -1)))
    log_est, positive = safe_log(estimate)
    value = torch.exp((log_est.to(torch.float64) + log_scale) / 2.0**n_iter)
    return torch.where(positive, value, torch.zeros_like(value))
