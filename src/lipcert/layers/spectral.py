"""Spectral normalization with a guaranteed bound: ``W / B(W)`` where ``B(W)`` is a Gram-
iteration upper bound on the true operator norm (Delattre, Barthelemy, Araujo, Allauzen,
ICML 2023, arXiv 2305.16173), computed by lipcert.linalg.

For convolutions the bound is on the actual operator (stride, padding and input size
included), not on a reshaped kernel: the reshape norm used by ``torch.nn.utils.spectral_norm``
can lie below the operator norm, and the bounds of the form ``sqrt(k_h k_w) ||reshape||`` used by
deel-torchlip are loose, which wastes capacity. The normalized layer has norm <= 1 and,
with a tight Gram bound, close to 1.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers._schur import safe_reciprocal
from lipcert.layers.parametrized import ConvGeometry, ParametrizedConv2d, ParametrizedLinear
from lipcert.linalg import dense_norm

__all__ = ["SpectralLinear", "SpectralConv2d", "DEFAULT_GRAM_STEPS"]

DEFAULT_GRAM_STEPS = 6


class _DenseSpectralScale(nn.Module):
    """Parametrization ``W -> W / gram_bound(W)``."""

    def __init__(self, n_iter: int) -> None:
        super().__init__()
        self.n_iter = n_iter

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        bound = dense_norm(weight, method="gram", n_iter=self.n_iter).value
        return weight * safe_reciprocal(bound)


class _ConvSpectralScale(nn.Module):
    """Parametrization ``K -> K / gram_bound(conv_K at input_size)``."""

    def __init__(self, geometry: ConvGeometry, input_size: tuple[int, int], n_iter: int) -> None:
        super().__init__()
        self.geometry = geometry
        self.input_size = input_size
        self.n_iter = n_iter

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        bound = self.geometry.operator_norm(weight, self.input_size, method="gram",
                                            n_iter=self.n_iter).require_sound("SpectralConv2d")
        return weight * safe_reciprocal(bound.value)


class SpectralLinear(ParametrizedLinear):
    """``nn.Linear`` whose weight is divided by a Gram-iteration upper bound on its spectral
    norm (``n_iter`` steps); spectral norm <= 1. Other arguments as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, n_iter: int = DEFAULT_GRAM_STEPS) -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         parametrization=_DenseSpectralScale(n_iter))


class SpectralConv2d(ParametrizedConv2d):
    """``nn.Conv2d`` whose kernel is divided by a Gram-iteration upper bound on the norm of the
    convolution operator on inputs of spatial size ``input_size``.

    Arguments as ``nn.Conv2d`` (``padding_mode`` ``"zeros"`` or ``"circular"``), plus:

    Args:
        input_size: ``(H, W)`` (or an int for square inputs) of the inputs the layer will see.
            Required, because the operator norm depends on it. With zero padding the norm
            grows with the input size, so inputs up to this size are accepted; with circular
            padding only this exact size is. Other inputs raise :class:`BadInputError`.
        n_iter: Gram iteration steps (more is tighter and slower).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, input_size, n_iter: int = DEFAULT_GRAM_STEPS
                 ) -> None:
        pair = (input_size, input_size) if isinstance(input_size, int) else input_size
        size = tuple(int(s) for s in pair)
        if len(size) != 2 or min(size) < 1:
            raise BadInputError(f"SpectralConv2d: input_size must be an int or an (H, W) "
                                f"pair of positive ints, got {input_size!r}.")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype,
                         parametrization=lambda geometry: _ConvSpectralScale(
                             geometry, size, n_iter))
        self.input_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        if self.padding_mode == "circular":
            valid = size == self.input_size
        else:
            valid = size[0] <= self.input_size[0] and size[1] <= self.input_size[1]
        if not valid:
            raise BadInputError(
                f"SpectralConv2d was normalized for inputs of size {self.input_size} "
                f"({self.padding_mode} padding) but got {size}; its norm could exceed 1 there. "
                "Build it with input_size set to the size it will see.")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_size={self.input_size}"
