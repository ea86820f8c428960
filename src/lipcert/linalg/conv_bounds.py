"""Upper bounds on convolution norms that work from the kernel alone.

All three bound the operator for any input size that the geometry allows; they are looser
than the frequency SVD on the true grid but need no per-input-size work.

- :func:`reshape_norm_bound`: LMT (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034) and the
  four-reshape bound of Singla & Feizi ("Fantastic Four", NeurIPS 2021, arXiv 2111.02467).
  Write the operator as ``sum_a T_a (x) K_a`` with ``T_a`` the spatial shift of tap ``a``
  (a partial isometry on distinct output rows). Grouping each kernel axis with ``c_in`` or
  ``c_out`` factors the operator as ``[T]_row * M * [T]_col`` where ``M`` is a reshape of the
  kernel, so ``||op|| <= sqrt(prod counts) * ||M||_2``. The count of an axis grouped with
  ``c_in`` is the most (row, tap) pairs reading one input entry; grouped with ``c_out`` it
  is the most taps of a row reading the input (both at most ``k``, so this is never looser
  than the published ``sqrt(h w)`` factor). Norms of the reshapes are exact SVDs.
- :func:`toeplitz_grid_bound`: Araujo, Negrevergne, Chevaleyre, Atif, AAAI 2021
  (arXiv 2006.08391). The sup over the torus of the kernel's symbol bounds the operator;
  sampling it on an ``M``-grid per axis loses at most a factor ``alpha``. Here ``alpha`` is
  derived from Bernstein's inequality for exponential sums of type ``(k - 1) / 2`` (after
  centring): ``alpha = 1 / (1 - pi * sum_d (k_d - 1) / (2 M_d))``.
- :func:`gram_kernel_bound`: Delattre, Barthelemy, Allauzen 2024 (arXiv 2402.00240). Gram
  iteration on the kernel itself: after ``t`` self-convolutions the symbol
  ``S_t = (K_hat^H K_hat)^(2^(t-1))`` is Hermitian for every frequency, so its spectral norm
  is at most its largest absolute row sum, which is at most ``max_i sum_{j,taps} |S_t[i,j]|``;
  hence ``sigma <= (max_i sum |S_t[i, j, taps]| e^{r_t})^(2^-t)``, for every input size. The
  self-convolutions are computed as products of the symbol on a grid of ``2^t (k - 1) + 1``
  points per axis (which holds every coefficient, so no aliasing), with one scale for the
  whole kernel kept in log space.

Strides use the polyphase kernel of the base operator (see :mod:`conv_geometry`), and rows
repeated by circular padding multiply the bound by ``sqrt(multiplicity)``.
"""

from __future__ import annotations

import itertools
import math

import torch

from lipcert.linalg.conv_geometry import ConvGeometry
from lipcert.linalg.conv_spectral import polyphase_kernel
from lipcert.linalg.gram import gram_iterate, safe_log, scaled_root

__all__ = [
    "reshape_norm_bound",
    "toeplitz_grid_bound",
    "default_toeplitz_grid",
    "gram_kernel_bound",
]


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _reshape_matrix(kernel: torch.Tensor, output_side: tuple[bool, ...]) -> torch.Tensor:
    """Kernel as ``(c_out * prod k[out-side], c_in * prod k[in-side])``."""
    axes = [2 + d for d in range(len(output_side))]
    rows = [0] + [a for a, side in zip(axes, output_side, strict=True) if side]
    cols = [1] + [a for a, side in zip(axes, output_side, strict=True) if not side]
    n_rows = math.prod(kernel.shape[a] for a in rows)
    return kernel.permute(rows + cols).reshape(n_rows, -1)


def reshape_norm_bound(
    kernel: torch.Tensor, geometry: ConvGeometry, *, all_reshapes: bool = True
) -> torch.Tensor:
    """Singla-Feizi bound (min over the ``2^d`` reshapes), or LMT's (``all_reshapes=False``).

    Guarantee: upper, for zero and circular padding and any stride.
    """
    choices = itertools.product((False, True), repeat=len(geometry.axes))
    if not all_reshapes:
        choices = [(False,) * len(geometry.axes)]
    bounds = []
    for output_side in choices:
        count = geometry.multiplicity
        for axis, side in zip(geometry.axes, output_side, strict=True):
            count *= axis.output_count if side else axis.input_count
        matrix = _reshape_matrix(kernel, output_side)
        bounds.append(torch.linalg.matrix_norm(matrix, ord=2) * _scalar(math.sqrt(count), kernel))
    return torch.stack(bounds).amin()


def default_toeplitz_grid(kernel_size: tuple[int, ...]) -> tuple[int, ...]:
    """``32 (k - 1)`` samples per axis (``alpha`` about 1.05 per axis), at least ``k``."""
    return tuple(max(k, 32 * (k - 1)) for k in kernel_size)


def toeplitz_grid_bound(
    kernel: torch.Tensor, geometry: ConvGeometry, grid: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Sampled-symbol bound of Araujo et al. 2021 with its correction factor; upper.

    Returns the bound and the grid used. Raises ValueError when the grid is too coarse for
    the correction factor to exist.
    """
    phased = polyphase_kernel(kernel, geometry.base_strides)
    sizes = tuple(phased.shape[2:])
    grid = default_toeplitz_grid(sizes) if grid is None else tuple(grid)
    if len(grid) != len(sizes) or any(m < k for m, k in zip(grid, sizes, strict=True)):
        raise ValueError(f"the Toeplitz grid {grid} needs one size >= the kernel {sizes} per axis")
    loss = sum(math.pi * (k - 1) / (2 * m) for k, m in zip(sizes, grid, strict=True))
    if loss >= 1:
        raise ValueError(f"the Toeplitz grid {grid} is too coarse for kernel {sizes}")
    blocks = _symbol(phased, grid)
    sampled = torch.linalg.svdvals(blocks).amax()
    factor = math.sqrt(geometry.multiplicity) / (1.0 - loss)
    return sampled * _scalar(factor, kernel), grid


def _symbol(coefficients: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Samples ``(*frequencies, c_out, c_in)`` of a real kernel's symbol on ``grid`` (rfft)."""
    spatial = tuple(range(2, coefficients.dim()))
    spectrum = torch.fft.rfftn(coefficients, s=grid, dim=spatial)
    return spectrum.permute(*spatial, 0, 1).contiguous()


def _coefficients(symbol: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`_symbol`, with the centred coefficients rolled to start at 0."""
    dims = len(grid)
    spatial = tuple(range(2, 2 + dims))
    channels_first = symbol.permute(dims, dims + 1, *range(dims))
    coefficients = torch.fft.irfftn(channels_first, s=grid, dim=spatial)
    return torch.roll(coefficients, shifts=tuple(m // 2 for m in grid), dims=spatial)


def gram_kernel_bound(kernel: torch.Tensor, geometry: ConvGeometry, n_iter: int) -> torch.Tensor:
    """Input-size-free Gram bound of arXiv 2402.00240 with ``n_iter >= 1`` steps; upper.

    Step ``j`` squares the symbol on the smallest grid that holds all its coefficients,
    ``2^j (k - 1) + 1`` points per axis, so the work grows with the kernel. Between steps
    the coefficients are rolled to start at index 0: a unimodular phase on the symbol, which
    the next ``G^H G`` cancels and which leaves the final sum of moduli unchanged.
    """
    coefficients = polyphase_kernel(kernel, geometry.base_strides)
    sizes = tuple(coefficients.shape[2:])
    log_scale = None
    for step in range(1, n_iter + 1):
        grid = tuple(2**step * (k - 1) + 1 for k in sizes)
        gram, log_scale = gram_iterate(_symbol(coefficients, grid), 1, log_scale, shared_scale=True)
        coefficients = _coefficients(gram, grid)
    row_sums = coefficients.abs().sum(dim=tuple(range(1, coefficients.dim())))
    log_row, positive = safe_log(row_sums.amax())
    value = scaled_root(log_row, log_scale, n_iter, row_sums.dtype)
    value = torch.where(positive, value, torch.zeros_like(value))
    return value * _scalar(math.sqrt(geometry.multiplicity), kernel)
