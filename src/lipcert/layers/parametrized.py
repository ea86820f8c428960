"""Bases of the layers that are "a plain ``nn.Linear`` / ``nn.Conv2d`` with a transformed
weight" (AOL, spectral, orthogonal, normalized rows): the transformation is a
``torch.nn.utils.parametrize`` parametrization of ``weight``, so ``layer.weight`` is always the
effective weight, recomputed from the raw one (``layer.parametrizations.weight.original``).

``lipschitz_bound`` measures the effective weight with lipcert.linalg (exact SVD for dense
layers; ``conv_norm(method="auto")``, exact or a guaranteed upper bound, for convolutions at the
given input size), so approximate constructions report their true constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from lipcert.errors import UnsupportedLayerError, check_finite
from lipcert.layers._schur import dense_kernel
from lipcert.layers._shapes import check_batch_shape, conv_padding
from lipcert.layers.export import plain_conv_like, plain_linear_like
from lipcert.linalg import NormBound, conv_norm, dense_norm

__all__ = ["ParametrizedLinear", "ParametrizedConv2d", "SUPPORTED_PADDING_MODES",
           "ConvGeometry"]

SUPPORTED_PADDING_MODES = ("zeros", "circular")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything but the kernel that fixes a 2-D convolution operator."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    padding_mode: str

    def operator_norm(self, weight: torch.Tensor, input_size, method: str = "auto",
                      **options) -> NormBound:
        """Norm of the convolution with kernel ``weight`` on inputs of spatial ``input_size``
        (lipcert.linalg.conv_norm on the equivalent groups-1, dilation-1 kernel)."""
        kernel = dense_kernel(weight, self.groups, self.dilation)
        return conv_norm(kernel, tuple(input_size), stride=self.stride, padding=self.padding,
                         padding_mode=self.padding_mode, method=method, **options)


class ParametrizedLinear(nn.Linear):
    """``nn.Linear`` whose weight is ``parametrization(raw weight)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, parametrization: nn.Module) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        parametrize.register_parametrization(self, "weight", parametrization)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Spectral norm of the effective weight (exact SVD; differentiable)."""
        check_batch_shape(input_shape, (2,), self.in_features, type(self).__name__)
        weight = self.weight
        check_finite(weight.detach(), f"{type(self).__name__}.weight")
        return dense_norm(weight, method="exact")

    def vanilla(self, input_shape=None) -> nn.Linear:
        """``nn.Linear`` holding the effective weight, recomputed now."""
        with torch.no_grad():
            return plain_linear_like(self, self.weight)


class ParametrizedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero or circular padding) whose weight is ``parametrization(raw)``.

    ``parametrization`` is called with the layer's :class:`ConvGeometry` and returns the
    parametrization module.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *,
                 parametrization: Callable[[ConvGeometry], nn.Module]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        if padding_mode not in SUPPORTED_PADDING_MODES:
            raise UnsupportedLayerError(
                f"{type(self).__name__}: padding_mode={padding_mode!r} is not supported (its "
                "padding operator is not 1-Lipschitz); use 'zeros' or 'circular'.")
        pads = conv_padding(padding, self.kernel_size, self.dilation, type(self).__name__)
        reach = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation, strict=True)]
        if padding_mode == "circular" and any(2 * p > r for p, r in zip(pads, reach,
                                                                          strict=True)):
            raise UnsupportedLayerError(
                f"{type(self).__name__}: circular padding {pads} wider than (kernel - 1) / 2 "
                "repeats outputs, so the layer could exceed norm 1; use padding <= "
                "dilation * (kernel_size - 1) // 2.")
        self.geometry = ConvGeometry(
            self.stride, pads, self.dilation, self.groups, padding_mode)
        parametrize.register_parametrization(self, "weight", parametrization(self.geometry))

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Operator norm of the effective convolution at ``input_shape`` (exact or upper;
        differentiable in the weight)."""
        shape = check_batch_shape(input_shape, (4,), self.in_channels, type(self).__name__)
        weight = self.weight
        check_finite(weight.detach(), f"{type(self).__name__}.weight")
        bound = self.geometry.operator_norm(weight, shape[2:])
        return bound.require_sound(type(self).__name__)

    def vanilla(self, input_shape=None) -> nn.Conv2d:
        """``nn.Conv2d`` holding the effective weight, recomputed now."""
        with torch.no_grad():
            return plain_conv_like(self, self.weight)
