"""Spectral norm of a 1-D or 2-D convolution: :func:`conv_norm` and its methods.

| method       | guarantee     | reference                                               |
|--------------|---------------|---------------------------------------------------------|
| exact        | exact / upper | per-frequency SVD, Sedghi et al. 2019 (arXiv 1805.10408) |
| gram         | upper         | per-frequency Gram iteration (arXiv 2305.16173)          |
| gram-pruned  | upper         | the same, dropping frequencies that cannot hold the max  |
| gram-kernel  | upper         | Gram iteration on the kernel (arXiv 2402.00240)          |
| toeplitz     | upper         | sampled symbol, Araujo et al. 2021 (arXiv 2006.08391)    |
| lmt          | upper         | reshape bound, Tsuzuku et al. 2018 (arXiv 1802.04034)    |
| singla-feizi | upper         | four reshapes, Singla & Feizi 2021 (arXiv 2111.02467)    |
| power        | estimate      | power iteration on the true operator (conv, its adjoint) |

"exact" is exact when every output row of the layer is a distinct row of a circular
operator that it covers completely: circular padding with ``left + right = k - 1`` and
stride 1, or a stride dividing the input size with the matching output length (polyphase
split, Senderovich et al. 2022, arXiv 2201.09640). Otherwise (zero padding, other paddings
or strides) the frequency methods use the circular operator on the zero-padded grid, or the
stride-1 circular operator when the stride does not divide a circular input (``NormBound``
then reports ``upper``; :func:`describe_conv` says which case applies).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lipcert.errors import BadInputError, check_finite
from lipcert.linalg.checks import check_iterations, check_options, unknown_method
from lipcert.linalg.conv_bounds import gram_kernel_bound, reshape_norm_bound, toeplitz_grid_bound
from lipcert.linalg.conv_geometry import ConvGeometry, conv_geometry
from lipcert.linalg.conv_spectral import (
    frequency_gram_norm,
    frequency_pruned_gram_norm,
    frequency_svd_norm,
)
from lipcert.linalg.power import PowerIterationState, power_iteration
from lipcert.linalg.result import NormBound
from lipcert.linalg.scaling import normalize, restore_bound

__all__ = [
    "CONV_METHODS",
    "conv_norm",
    "conv_operator",
    "conv_adjoint",
    "describe_conv",
    "DEFAULT_CONV_GRAM_ITERATIONS",
]

CONV_METHODS: tuple[str, ...] = (
    "exact",
    "gram",
    "gram-pruned",
    "gram-kernel",
    "toeplitz",
    "lmt",
    "singla-feizi",
    "power",
)
DEFAULT_CONV_GRAM_ITERATIONS = 8
DEFAULT_PRUNE_PROBE = 2
DEFAULT_KERNEL_GRAM_ITERATIONS = 5
DEFAULT_CONV_POWER_ITERATIONS = 100


def _check_kernel(kernel: torch.Tensor) -> None:
    check_finite(kernel, "kernel")
    if kernel.dim() not in (3, 4):
        raise BadInputError(
            f"conv_norm expects a kernel of shape (c_out, c_in, k) or (c_out, c_in, kh, kw), "
            f"got shape {tuple(kernel.shape)}."
        )
    if kernel.is_complex() or not kernel.is_floating_point():
        raise BadInputError(f"conv_norm expects a real floating-point kernel, got {kernel.dtype}.")
    if kernel.numel() == 0:
        raise BadInputError(f"conv_norm got an empty kernel of shape {tuple(kernel.shape)}.")


def conv_operator(kernel: torch.Tensor, geometry: ConvGeometry):
    """The convolution as a function of its input ``(N, c_in, *input_size)`` (no bias)."""
    pads: list[int] = []
    for axis in reversed(geometry.axes):
        pads += [axis.left, axis.right]
    mode = "circular" if geometry.circular else "constant"
    conv = F.conv1d if kernel.dim() == 3 else F.conv2d
    strides = tuple(axis.stride for axis in geometry.axes)

    def apply(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, pads, mode=mode) if any(pads) else x
        return conv(padded, kernel, stride=strides)

    return apply


def conv_adjoint(kernel: torch.Tensor, geometry: ConvGeometry):
    """The adjoint of :func:`conv_operator`: transposed convolution, then the padding's adjoint.

    Zero padding's adjoint crops; circular padding's adjoint adds every padded entry back onto
    the input entry it copies.
    """
    conv_t = F.conv_transpose1d if kernel.dim() == 3 else F.conv_transpose2d
    strides = tuple(axis.stride for axis in geometry.axes)
    padded = [axis.size + axis.left + axis.right for axis in geometry.axes]
    extra = tuple(
        p - ((axis.out - 1) * axis.stride + axis.kernel)
        for p, axis in zip(padded, geometry.axes, strict=True)
    )
    sources = [
        torch.tensor([(i - axis.left) % axis.size for i in range(p)], device=kernel.device)
        for p, axis in zip(padded, geometry.axes, strict=True)
    ]

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        grad = conv_t(y, kernel, stride=strides, output_padding=extra)
        for dim, (axis, source) in enumerate(zip(geometry.axes, sources, strict=True), start=2):
            if geometry.circular:
                shape = list(grad.shape)
                shape[dim] = axis.size
                grad = grad.new_zeros(shape).index_add_(dim, source, grad)
            else:
                grad = grad.narrow(dim, axis.left, axis.size)
        return grad

    return adjoint


def _power_norm(kernel: torch.Tensor, geometry: ConvGeometry, options: dict) -> NormBound:
    n_iter = check_iterations(options.get("n_iter", DEFAULT_CONV_POWER_ITERATIONS))
    apply = conv_operator(kernel, geometry)
    adjoint = conv_adjoint(kernel.detach(), geometry)
    in_shape = (1, kernel.shape[1], *(axis.size for axis in geometry.axes))
    state: PowerIterationState | None = options.get("state")
    if state is not None:
        state.check_shape(in_shape)
        value = state.run(apply, adjoint, n_iter, kernel)
    else:
        generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
        start = torch.randn(in_shape, generator=generator, dtype=kernel.dtype)
        value, _ = power_iteration(apply, adjoint, start.to(kernel.device), n_iter)
    return NormBound(value, "estimate", "power", n_iter)


def _frequency_guarantee(geometry: ConvGeometry) -> str:
    return "exact" if geometry.exact else "upper"


def _run_method(
    kernel: torch.Tensor, geometry: ConvGeometry, method: str, options: dict
) -> NormBound:
    if method == "exact":
        check_options(method, options, ())
        value = frequency_svd_norm(kernel, geometry)
        # name what was computed: the circular operator's exact norm bounds a zero-padded one
        label = "frequency svd" if geometry.exact else "frequency svd, circular embedding"
        return NormBound(value, _frequency_guarantee(geometry), label)
    if method == "gram":
        check_options(method, options, ("n_iter",))
        n_iter = check_iterations(options.get("n_iter", DEFAULT_CONV_GRAM_ITERATIONS))
        return NormBound(frequency_gram_norm(kernel, geometry, n_iter), "upper", "gram", n_iter)
    if method == "gram-pruned":
        check_options(method, options, ("n_iter", "n_probe"))
        n_iter = check_iterations(options.get("n_iter", DEFAULT_CONV_GRAM_ITERATIONS), 1)
        n_probe = check_iterations(options.get("n_probe", min(DEFAULT_PRUNE_PROBE, n_iter)), 1)
        if n_probe > n_iter:
            raise BadInputError(f"n_probe ({n_probe}) must not exceed n_iter ({n_iter}).")
        value, _ = frequency_pruned_gram_norm(kernel, geometry, n_iter, n_probe)
        return NormBound(value, "upper", "gram-pruned", n_iter)
    if method == "gram-kernel":
        check_options(method, options, ("n_iter",))
        n_iter = check_iterations(options.get("n_iter", DEFAULT_KERNEL_GRAM_ITERATIONS), 1)
        value = gram_kernel_bound(kernel, geometry, n_iter)
        return NormBound(value, "upper", "gram-kernel", n_iter)
    if method == "toeplitz":
        check_options(method, options, ("grid",))
        grid = options.get("grid")
        if grid is not None:
            grid = (grid,) * (kernel.dim() - 2) if isinstance(grid, int) else tuple(grid)
        try:
            value, _ = toeplitz_grid_bound(kernel, geometry, grid)
        except ValueError as error:
            raise BadInputError(f"{error}; choose a finer 'grid'.") from None
        return NormBound(value, "upper", "toeplitz")
    if method in ("lmt", "singla-feizi"):
        check_options(method, options, ())
        value = reshape_norm_bound(kernel, geometry, all_reshapes=method == "singla-feizi")
        return NormBound(value, "upper", method)
    if method == "power":
        check_options(method, options, ("n_iter", "seed", "state"))
        return _power_norm(kernel, geometry, options)
    raise unknown_method(method, CONV_METHODS + ("auto",), "convolution")


def _auto(kernel: torch.Tensor, geometry: ConvGeometry, options: dict) -> NormBound:
    """Exact frequency SVD where it is exact; else the smaller of the sound bounds."""
    check_options("auto", options, ())
    svd = _run_method(kernel, geometry, "exact", {})
    if svd.guarantee == "exact":
        return svd
    reshape = _run_method(kernel, geometry, "singla-feizi", {})
    return svd if float(svd) <= float(reshape) else reshape


def conv_norm(
    kernel: torch.Tensor,
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    padding_mode: str = "zeros",
    method: str = "auto",
    **options,
) -> NormBound:
    """Spectral norm of the convolution ``x -> conv(x, kernel)`` on inputs of ``input_size``.

    Args:
        kernel: ``(c_out, c_in, k)`` (1-D) or ``(c_out, c_in, kh, kw)`` (2-D), real.
        input_size: spatial size of the input (int, or one int per axis).
        stride, padding, padding_mode: as in ``torch.nn.Conv1d/Conv2d`` (``padding`` may be
            ``"same"`` or ``"valid"``; ``padding_mode`` is ``"zeros"`` or ``"circular"``).
            Dilation and groups are not supported here.
        method: ``"auto"`` or one of :data:`CONV_METHODS` (see the module table). ``"auto"``
            returns the exact frequency SVD when the operator is circular, else the smaller
            of the frequency SVD on the padded grid and the Singla-Feizi bound; it never
            returns an estimate.
        options: ``n_iter`` (gram, gram-pruned, gram-kernel, power), ``n_probe``
            (gram-pruned), ``grid`` (toeplitz), ``seed`` or ``state`` (power: a
            :class:`PowerIterationState` of shape ``(1, c_in, *input_size)``).

    Every method runs on the kernel scaled by an exact power of two (largest entry in
    ``[0.5, 1)``, see :mod:`lipcert.linalg.scaling`), so subnormal kernels and kernels near
    the dtype's maximum are fine; float16/bfloat16 kernels are computed in float32 and the
    value is float32. Sound values are rounded up when scaled back.

    Returns:
        A :class:`NormBound`; differentiable in ``kernel`` for every method.

    Raises:
        BadInputError: NaN/Inf kernel, wrong rank, input smaller than the kernel, bad
            stride/padding, unknown method or option, a norm beyond the dtype's largest number.
    """
    _check_kernel(kernel)
    geometry = conv_geometry(tuple(kernel.shape[2:]), input_size, stride, padding, padding_mode)
    scaled, exponent = normalize(kernel)
    if method == "auto":
        return restore_bound(_auto(scaled, geometry, options), exponent)
    return restore_bound(_run_method(scaled, geometry, method, options), exponent)


def describe_conv(
    kernel_size: Sequence[int],
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    padding_mode: str = "zeros",
) -> str:
    """One line saying how the frequency methods treat this convolution."""
    geometry = conv_geometry(tuple(kernel_size), input_size, stride, padding, padding_mode)
    grid = "x".join(str(g) for g in geometry.grid)
    if geometry.exact:
        kind = "exact: the layer is a circular convolution"
    elif geometry.circular:
        kind = "upper: rows of a circular convolution"
    else:
        kind = "upper: compression of the circular convolution on the zero-padded grid"
    stride_note = (
        "stride-1 upper bound (stride does not divide the input)"
        if geometry.strided_by_subsampling
        else "polyphase split for strides"
    )
    repeat = f", rows repeated up to {geometry.multiplicity}x" if geometry.multiplicity > 1 else ""
    return f"{kind} on grid {grid}; {stride_note}{repeat}"
