"""Almost-orthogonal layers (AOL; Prach & Lampert, ECCV 2022, arXiv 2208.03160).

The effective weight is ``W diag(d)^{-1/2}`` with ``d_i = sum_j |W^T W|_ij`` (for a convolution,
``|W^T W|`` summed over all spatial lags of the kernel's self-correlation). By the Schur test
(module :mod:`lipcert.layers._schur`) the rescaled operator has norm at most 1, for dense layers
and for convolutions with any stride, dilation, groups, input size, zero or circular padding.
A zero ``d_i`` belongs to an all-zero input column, which stays zero.

Initialization: the AOL paper stresses that the rescaling is tight, and the layer close to
orthogonal, when ``W^T W`` is close to diagonal. torch's default (Kaiming-uniform) kernels are
far from that, so the layers started with norms well below 1 and signals shrank layer after
layer. Both layers therefore start orthogonal: ``AOLLinear`` from an orthogonal matrix
(``nn.init.orthogonal_``), ``AOLConv2d`` from a delta-orthogonal kernel (an orthogonal matrix
at the kernel's centre tap, zeros elsewhere; Xiao et al. 2018, arXiv 1806.05393). Then
``W^T W`` is the identity (``out >= in``; a projection otherwise), ``d = 1`` and the layer
is an isometry at initialization.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.layers._schur import dense_kernel, reciprocal_rounded_down, schur_diagonal
from lipcert.layers.parametrized import ParametrizedConv2d, ParametrizedLinear

__all__ = ["AOLLinear", "AOLConv2d", "aol_scale"]


def _start_orthogonal(layer: nn.Module, groups: int = 1) -> None:
    """Set the layer's raw weight to an orthogonal (dense) or delta-orthogonal (conv) one,
    one orthogonal block per group."""
    raw = layer.parametrizations.weight.original
    rows, columns = raw.shape[0] // groups, raw.shape[1]
    blocks = [nn.init.orthogonal_(torch.empty(rows, columns, dtype=torch.float64))
              for _ in range(groups)]
    with torch.no_grad():
        start = torch.zeros_like(raw)
        centre = start[(slice(None), slice(None), *(k // 2 for k in raw.shape[2:]))]
        centre.copy_(torch.cat(blocks))
        raw.copy_(start)


def aol_scale(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The AOL factors ``d^{-1/2}``, one per input column / input channel (length ``c_in``):
    ``d`` in float64, the factors rounded down into the weight's dtype."""
    wide = weight.double()
    gram_side = wide.mT if weight.dim() == 2 else dense_kernel(wide, groups).transpose(0, 1)
    return reciprocal_rounded_down(schur_diagonal(gram_side), 0.5, dtype=weight.dtype)


class _AOLRescale(nn.Module):
    """Parametrization ``W -> W diag(d)^{-1/2}``."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = aol_scale(weight, self.groups)
        if weight.dim() == 2:
            return weight * scale[None, :]
        out_channels, in_per_group = weight.shape[:2]
        grouped = weight.view(self.groups, out_channels // self.groups, *weight.shape[1:])
        factors = scale.view(self.groups, 1, in_per_group, 1, 1)
        return (grouped * factors).view_as(weight)


class AOLLinear(ParametrizedLinear):
    """``nn.Linear`` with AOL-rescaled weight; spectral norm <= 1, orthogonal at
    initialization. Arguments as ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         parametrization=_AOLRescale())
        _start_orthogonal(self)


class AOLConv2d(ParametrizedConv2d):
    """``nn.Conv2d`` with AOL-rescaled kernel; operator norm <= 1 for every input size,
    delta-orthogonal at initialization (per group).

    Arguments as ``nn.Conv2d``; ``padding_mode`` must be ``"zeros"`` or ``"circular"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype,
                         parametrization=lambda geometry: _AOLRescale(geometry.groups))
        _start_orthogonal(self, groups)
