"""Frequency-domain norms of convolutions: per-frequency SVD, Gram iteration, pruned Gram.

A circular convolution on an ``n``-grid is block-diagonalised by the Fourier transform: its
singular values are the union over frequencies ``w`` of the singular values of the
``c_out x c_in`` block ``K_hat(w)`` (Sedghi, Gupta, Long, ICLR 2019, arXiv 1805.10408). A real
kernel has ``K_hat(-w) = conj(K_hat(w))``, so the real FFT's half of the frequencies holds all
of them. Strided circular convolutions (stride dividing the grid) become stride-1 ones on the
coarse grid ``n / s`` after the polyphase split of the kernel into ``s^d`` phases stacked as
input channels (Senderovich, Tulchinsky, Davidson 2022, arXiv 2201.09640).
"""

from __future__ import annotations

import math

import torch

from lipcert.linalg.conv_geometry import ConvGeometry
from lipcert.linalg.gram import gram_iterate, gram_power_lower_bound, gram_schatten_bound

__all__ = [
    "polyphase_kernel",
    "fold_kernel",
    "frequency_blocks",
    "frequency_svd_norm",
    "frequency_gram_norm",
    "frequency_pruned_gram_norm",
]

_PRUNE_MARGIN = 1e-3


def polyphase_kernel(kernel: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """Split ``(c_out, c_in, *k)`` into phases: ``(c_out, c_in * prod(s), *ceil(k / s))``.

    Phase ``r`` of axis ``d`` holds the taps ``k[s q + r]``; a strided convolution with the
    kernel equals a stride-1 convolution of the phase kernel with the polyphase components
    of the input (stacked as channels in the same order).
    """
    dims = len(strides)
    if all(s == 1 for s in strides):
        return kernel
    c_out, c_in = kernel.shape[:2]
    sizes = kernel.shape[2:]
    extra = []
    for k, s in zip(reversed(sizes), reversed(strides), strict=True):
        extra += [0, math.ceil(k / s) * s - k]
    padded = torch.nn.functional.pad(kernel, extra)
    shape = [c_out, c_in]
    for k, s in zip(padded.shape[2:], strides, strict=True):
        shape += [k // s, s]
    split = padded.reshape(shape)
    # axes: 0 c_out, 1 c_in, then (taps_d, phase_d) pairs -> c_out, c_in, phases..., taps...
    order = [0, 1] + [3 + 2 * d for d in range(dims)] + [2 + 2 * d for d in range(dims)]
    phased = split.permute(order)
    return phased.reshape(c_out, c_in * math.prod(strides), *phased.shape[2 + dims :])


def fold_kernel(kernel: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Wrap taps beyond a circular grid onto it (taps ``a`` and ``a + n`` act alike)."""
    for axis, n in enumerate(grid):
        dim = 2 + axis
        size = kernel.shape[dim]
        if size <= n:
            continue
        pad = [0, 0] * (kernel.dim() - 1 - dim) + [0, math.ceil(size / n) * n - size]
        padded = torch.nn.functional.pad(kernel, pad)
        shape = list(padded.shape)
        shape[dim : dim + 1] = [shape[dim] // n, n]
        kernel = padded.reshape(shape).sum(dim=dim)
    return kernel


def frequency_blocks(kernel: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """The blocks ``(*frequencies, c_out, c_in')`` of the base circular operator (real FFT)."""
    strides = geometry.base_strides
    coarse = tuple(g // s for g, s in zip(geometry.grid, strides, strict=True))
    phased = fold_kernel(polyphase_kernel(kernel, strides), coarse)
    dims = len(coarse)
    spatial = tuple(range(2, 2 + dims))
    spectrum = torch.fft.rfftn(phased, s=coarse, dim=spatial)
    return spectrum.permute(*spatial, 0, 1).contiguous()


def _row_factor(geometry: ConvGeometry, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(math.sqrt(geometry.multiplicity), dtype=like.dtype, device=like.device)


def frequency_svd_norm(kernel: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """Largest singular value over all frequency blocks (times sqrt of the row repetition)."""
    blocks = frequency_blocks(kernel, geometry)
    return torch.linalg.svdvals(blocks).amax() * _row_factor(geometry, kernel)


def frequency_gram_norm(kernel: torch.Tensor, geometry: ConvGeometry, n_iter: int) -> torch.Tensor:
    """Max over frequencies of the Gram-iteration bound (arXiv 2305.16173, Algorithm 2)."""
    blocks = frequency_blocks(kernel, geometry)
    gram, log_scale = gram_iterate(blocks, n_iter)
    bounds = gram_schatten_bound(gram, log_scale, n_iter)
    return bounds.amax() * _row_factor(geometry, kernel)


def frequency_pruned_gram_norm(
    kernel: torch.Tensor,
    geometry: ConvGeometry,
    n_iter: int,
    n_probe: int,
    n_power: int = 3,
) -> tuple[torch.Tensor, int]:
    """Gram iteration that drops frequencies which cannot hold the maximum.

    After ``n_probe`` Gram steps on every frequency, each frequency has an upper bound
    ``U(w)`` and a lower bound ``L(w)`` (a few products with its Gram matrix). A frequency
    with ``U(w) < max L`` has all its singular values below the true norm, so dropping it
    cannot lower the maximum; the frequency attaining ``max L`` always survives. The
    survivors run the remaining ``n_iter - n_probe`` steps. Same guarantee as
    :func:`frequency_gram_norm` (upper), a fraction of the work. Returns the bound and the
    number of surviving frequencies.
    """
    blocks = frequency_blocks(kernel, geometry)
    flat = blocks.reshape(-1, *blocks.shape[-2:])
    gram, log_scale = gram_iterate(flat, n_probe)
    upper = gram_schatten_bound(gram, log_scale, n_probe)
    lower = gram_power_lower_bound(gram, log_scale, n_probe, n_power)
    # A relative margin far above float rounding keeps the argmax frequency in every case.
    keep = upper.detach() * (1.0 + _PRUNE_MARGIN) >= lower.max()
    keep[lower.argmax()] = True
    gram, log_scale = gram_iterate(gram[keep], n_iter - n_probe, log_scale[keep])
    bounds = gram_schatten_bound(gram, log_scale, n_iter)
    return bounds.amax() * _row_factor(geometry, kernel), int(keep.sum())
