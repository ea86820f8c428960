"""Diagonal bounds on Gram operators by the weighted Schur test (shared by SLL and AOL).

For a symmetric matrix ``M`` and any positive vector ``v``,
``M <= diag(sum_j |M_ij| v_j / v_i)`` in the Loewner order (Schur test; Araujo et al. 2023,
arXiv 2303.03169, Theorem 3; Prach & Lampert 2022, arXiv 2208.03160, Theorem 1).

For a convolution ``A`` with kernel ``K`` (``c_out x c_in x k x k``), ``A A^*`` is again a
convolution whose kernel is the self-correlation of ``K`` (``c_out x c_out x (2k-1) x (2k-1)``).
With zero padding ``A`` is a compression ``P C E`` of a circular convolution ``C`` on a larger
grid (``E`` zero-embeds, ``P`` restricts), so ``A A^* <= P C C^* P^*``, a principal submatrix of
a circulant whose absolute row sums are at most the sum of ``|self-correlation|``; the same
diagonal bound therefore holds for every input size, padding and stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["abs_gram", "schur_diagonal", "safe_reciprocal", "reciprocal_rounded_down",
           "dense_kernel"]


def abs_gram(weight: torch.Tensor) -> torch.Tensor:
    """``|W W^*|`` summed over spatial lags: shape ``(rows, rows)`` for a matrix ``(rows, cols)``
    or a kernel ``(rows, cols, kh, kw)`` (then ``W W^*`` is the self-correlation of the kernel)."""
    if weight.dim() == 2:
        return (weight @ weight.mT).abs()
    kh, kw = weight.shape[-2:]
    correlation = F.conv2d(weight, weight, padding=(kh - 1, kw - 1))
    return correlation.abs().sum(dim=(-2, -1))


def schur_diagonal(weight: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Vector ``t`` with ``W W^* <= diag(t)``: ``t_i = sum_j |W W^*|_ij exp(q_j - q_i)``.

    ``log_q`` (one entry per row of ``weight``; zeros when ``None``) are the Schur weights ``q``
    of SLL. Differentiable in ``weight`` and ``log_q``.
    """
    gram = abs_gram(weight)
    if log_q is None:
        return gram.sum(dim=1)
    return (gram * torch.exp(log_q[None, :] - log_q[:, None])).sum(dim=1)


def safe_reciprocal(values: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``values ** -power`` where ``values > 0`` and 0 where ``values == 0``.

    A zero Schur diagonal entry means the matching row of the weight is zero, so whatever
    multiplies it is irrelevant; 0 keeps the forward finite and the gradient free of NaN, and,
    unlike an epsilon added to the diagonal, it never changes a nonzero entry.
    """
    positive = values > 0
    safe = torch.where(positive, values, torch.ones_like(values))
    return torch.where(positive, safe.pow(-power), torch.zeros_like(values))


def reciprocal_rounded_down(values: torch.Tensor, power: float = 1.0,
                            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values ** -power`` (0 where ``values == 0``) computed in float64 and rounded toward
    zero into ``dtype`` (default: the dtype of ``values``); differentiable.

    A 1-Lipschitz layer that multiplies by ``t^{-p}`` (SLL's ``T^{-1}``, AOL's ``d^{-1/2}``) stays
    1-Lipschitz only if the factor it uses is not above the exact one. Computed in the layer's
    own precision, the Schur sums ``t`` and their reciprocals round either way: after training
    (Schur weights ``exp(q_j - q_i)`` spanning many orders of magnitude) float32 layers reached
    ``1 + 2e-6``. Here ``values`` should be computed in float64 (their own rounding is then
    about 1e-16 relative) and every entry of the result is the largest ``dtype`` number not
    above the float64 reciprocal. The gradient is that of the plain cast.
    """
    dtype = values.dtype if dtype is None else dtype
    exact = safe_reciprocal(values.double(), power)
    cast = exact.to(dtype)
    above = cast.detach().double() > exact.detach()
    lowered = torch.where(above, torch.nextafter(cast.detach(), torch.zeros_like(cast)),
                          cast.detach())
    # ``cast + (lowered - cast)`` is exactly ``lowered``: the difference is one ulp or zero.
    return cast + (lowered - cast.detach())


def dense_kernel(weight: torch.Tensor, groups: int = 1, dilation=(1, 1)) -> torch.Tensor:
    """The ``(c_out, c_in, kh', kw')`` kernel of an ordinary (groups 1, dilation 1) convolution
    equal to the grouped / dilated one with ``weight``: block-diagonal over groups, with
    zeros between dilated taps. Used to hand any ``nn.Conv2d`` operator to lipcert.linalg."""
    out_channels, in_per_group, kh, kw = weight.shape
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if groups > 1:
        out_per_group = out_channels // groups
        blocks = weight.new_zeros(groups, out_per_group, groups, in_per_group, kh, kw)
        grouped = weight.view(groups, out_per_group, in_per_group, kh, kw)
        index = torch.arange(groups, device=weight.device)
        blocks[index, :, index] = grouped
        weight = blocks.reshape(out_channels, groups * in_per_group, kh, kw)
    if (dh, dw) != (1, 1):
        spread = weight.new_zeros(*weight.shape[:2], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        spread[..., ::dh, ::dw] = weight
        weight = spread
    return weight
