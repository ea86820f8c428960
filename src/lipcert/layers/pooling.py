"""Norm-preserving pooling: ``L2NormPool2d`` and ``InvertibleDownsample``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers._shapes import check_batch_shape, unit_bound
from lipcert.linalg import NormBound

__all__ = ["L2NormPool2d", "InvertibleDownsample"]


def _pair(value, what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise BadInputError(f"{what} must be a positive int or a pair of them, got {value!r}.")
    return pair


class L2NormPool2d(nn.Module):
    """Euclidean norm of each pooling window: ``y = sqrt(sum_window x^2)`` (``nn.LPPool2d``
    with ``norm_type=2``, without padding).

    Lipschitz constant: with non-overlapping windows (``stride >= kernel_size``), the map is
    1-Lipschitz (each window's norm is, and windows are disjoint), with constant exactly 1.
    With overlapping windows, each input lies in at most ``c_h c_w`` windows,
    ``c = ceil(min(k, n - k + 1) / s)``, giving ``sqrt(c_h c_w)`` (Tsuzuku et al. 2018,
    arXiv 1802.04034). The square root is evaluated at ``max(sum x^2, tiny)`` so all-zero
    windows have a finite, zero gradient; this changes the output by at most ``sqrt(tiny)``
    (1e-19 in float32) and keeps the map 1-Lipschitz per window.

    Args:
        kernel_size: window size (int or pair).
        stride: step (int or pair); defaults to ``kernel_size``.
    """

    def __init__(self, kernel_size, stride=None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.lipschitz_bound(x.shape)  # validates the input size
        window = self.kernel_size[0] * self.kernel_size[1]
        energy = F.avg_pool2d(x * x, self.kernel_size, self.stride) * window
        return torch.sqrt(torch.clamp(energy, min=torch.finfo(x.dtype).tiny))

    def lipschitz_bound(self, input_shape) -> NormBound:
        """1 (exact) for disjoint windows, else ``sqrt(c_h c_w)`` (upper)."""
        shape = check_batch_shape(input_shape, (4,), None, "L2NormPool2d")
        counts = []
        for n, k, s in zip(shape[2:], self.kernel_size, self.stride, strict=True):
            if n < k:
                raise BadInputError(f"L2NormPool2d: input size {n} is smaller than the "
                                    f"window {k}.")
            counts.append(math.ceil(min(k, n - k + 1) / s))
        if counts == [1, 1]:
            return unit_bound("l2-norm-pool")
        value = torch.tensor(float(counts[0] * counts[1]), dtype=torch.float64).sqrt()
        return NormBound(value, "upper", "l2-norm-pool-overlap")

    def vanilla(self, input_shape=None) -> nn.Module:
        """``nn.LPPool2d(2, kernel_size, stride)``."""
        return nn.LPPool2d(2, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class InvertibleDownsample(nn.PixelUnshuffle):
    """Space-to-depth (``nn.PixelUnshuffle``): ``(N, C, H, W) -> (N, C f^2, H/f, W/f)``.

    A permutation of coordinates, hence orthogonal: Lipschitz constant exactly 1.

    Args:
        factor: downscaling factor ``f`` (H and W must be divisible by it).
    """

    def __init__(self, factor: int = 2) -> None:
        if int(factor) < 1:
            raise BadInputError(f"factor must be a positive integer, got {factor}.")
        super().__init__(int(factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.lipschitz_bound(x.shape)  # validates the input size
        return super().forward(x)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exactly 1 (a permutation)."""
        shape = check_batch_shape(input_shape, (4,), None, "InvertibleDownsample")
        f = self.downscale_factor
        if shape[2] % f or shape[3] % f:
            raise BadInputError(f"InvertibleDownsample: spatial size {shape[2:]} is not "
                                f"divisible by the factor {f}.")
        return unit_bound("invertible-downsample")

    def vanilla(self, input_shape=None) -> nn.Module:
        """``nn.PixelUnshuffle(factor)``."""
        return nn.PixelUnshuffle(self.downscale_factor)
