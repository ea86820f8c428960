"""SDP-based Lipschitz layers (SLL; Araujo, Havens, Delattre, Allauzen, Hu, ICLR 2023,
arXiv 2303.03169).

``y = x - 2 W T^{-1} relu(W^T x + b)`` with ``T = diag(t)``,
``t_i = sum_j |W^T W|_ij exp(q_j - q_i)`` and a learnable vector ``q``. By the weighted Schur
test ``W^T W <= T``, so the layer is 1-Lipschitz (module :mod:`lipcert.layers.residual`). Here
``W^T`` is the stored ``weight`` (``inner x features``, or an ``inner x channels x k x k``
kernel applied with ``padding = k // 2``, any odd ``k``). No epsilon is added inside ``T^{-1}``
(that variant is not 1-Lipschitz); a zero ``t_i`` can only come with a zero row of the weight,
whose term is then dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.layers._schur import abs_gram, reciprocal_rounded_down, schur_diagonal
from lipcert.layers.residual import ResidualLayer
from lipcert.linalg import NormBound

__all__ = ["SLLLinear", "SLLConv2d"]


class _SLL(ResidualLayer):
    """SLL layer; dense when ``kernel_size`` is None."""

    def __init__(self, features: int, inner: int, kernel_size: int | None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(features, inner, kernel_size, generator)
        self.log_q = nn.Parameter(torch.zeros(inner))

    def schur_t(self) -> torch.Tensor:
        """The diagonal ``t`` of ``T``, computed in float64 (differentiable)."""
        return schur_diagonal(self.weight.double(), self.log_q.double())

    def inverse_t(self) -> torch.Tensor:
        """``T^{-1}`` as the forward pass uses it: in the weight's dtype, each entry rounded
        down from the float64 value, so the layer is 1-Lipschitz in its working precision."""
        return reciprocal_rounded_down(self.schur_t(), dtype=self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.inverse_t())

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Upper bound ``max(1, 2 s - 1)`` on the Lipschitz constant, from the current weights.

        ``s`` bounds ``||T^{-1/2} W^T||^2`` by the Schur test with weights
        ``exp(q_i) sqrt(t_i)``: ``s = max_i sum_j |W^T W|_ij exp(q_j - q_i) / t_i``, where ``t``
        is the vector the forward pass uses (in its dtype) and ``|W^T W|`` is recomputed in
        float64. ``s`` is 1 up to rounding, so the bound is 1 up to rounding, but it is
        measured rather than assumed. Independent of the input size (any padding offset).
        """
        self.check_input_shape(input_shape)
        self.check_weights()
        with torch.no_grad():
            inverse_t = self.inverse_t().double()
            gram = abs_gram(self.weight.double())
            log_q = self.log_q.double()
            rows = (gram * torch.exp(log_q[None, :] - log_q[:, None])).sum(dim=1)
            schur = (rows * inverse_t).max()
            value = torch.clamp(2 * schur - 1, min=1.0)
        return NormBound(value, "upper", "sll-schur")

    def vanilla(self, input_shape=None) -> nn.Module:
        """Plain-torch copy (``x + ConvTranspose(ReLU(Conv(x)))``); ``T`` is recomputed."""
        with torch.no_grad():
            return self.residual_vanilla(self.inverse_t())


class SLLLinear(_SLL):
    """Dense SLL layer on ``features``, hidden size ``inner_features``; 1-Lipschitz.

    Args:
        features: input = output size.
        inner_features: size of ``W^T x``.
        generator: optional torch.Generator for the initialization.
    """

    def __init__(self, features: int, inner_features: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(features, inner_features, None, generator)


class SLLConv2d(_SLL):
    """Convolutional SLL layer (stride 1, zero padding ``kernel_size // 2``); 1-Lipschitz for
    every input size.

    Args:
        channels: input = output channels.
        inner_channels: channels of ``W^T x``.
        kernel_size: any positive odd integer.
        generator: optional torch.Generator for the initialization.
    """

    def __init__(self, channels: int, inner_channels: int, kernel_size: int = 3,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(channels, inner_channels, kernel_size, generator)
