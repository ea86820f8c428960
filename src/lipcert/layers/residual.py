"""The residual form shared by SLL and CPL: ``y = x - 2 A^* diag(s) relu(A x + b)``.

``A`` is a dense map ``features -> inner`` (weight ``(inner, features)``) or a stride-1 convolution
``channels -> inner`` with an odd kernel and ``padding = k // 2`` (weight
``(inner, channels, k, k)``), so ``A^*`` is ``F.linear`` with the transposed weight or the
transposed convolution with the same padding. Its Jacobian is
``J = I - 2 (D^{1/2} A)^* R (D^{1/2} A)`` with ``D = diag(s)`` and ``R = diag(relu') in [0, 1]``:
symmetric with eigenvalues in ``[1 - 2 ||D^{1/2} A||^2, 1]``, hence
``||J|| <= max(1, 2 ||D^{1/2} A||^2 - 1)``, which is at most 1 exactly when
``A A^* <= diag(1 / s)`` (SLL, arXiv 2303.03169, Theorem 3; CPL, arXiv 2110.12690, Prop. 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError, check_finite
from lipcert.layers._shapes import check_batch_shape
from lipcert.layers.export import residual_graph

__all__ = ["ResidualLayer"]


class ResidualLayer(nn.Module):
    """Base of SLL and CPL layers: parameters, the map ``A``, its adjoint and the export.

    Args:
        features: channels (convolution) or features (dense) of input and output.
        inner: channels / features of the hidden side ``A x``.
        kernel_size: odd kernel size, or ``None`` for a dense layer.
        generator: torch.Generator for the initialization (Xavier normal weight, uniform bias).
    """

    def __init__(self, features: int, inner: int, kernel_size: int | None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if features <= 0 or inner <= 0:
            raise BadInputError(f"{type(self).__name__}: features and inner sizes must be "
                                f"positive, got {features} and {inner}.")
        if kernel_size is not None and (kernel_size <= 0 or kernel_size % 2 == 0):
            raise BadInputError(f"{type(self).__name__}: kernel_size must be a positive odd "
                                f"integer (the layer keeps the spatial size), got {kernel_size}.")
        self.features = features
        self.inner = inner
        self.kernel_size = kernel_size
        shape = (inner, features) if kernel_size is None else (inner, features, kernel_size,
                                                               kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(inner))
        nn.init.xavier_normal_(self.weight, generator=generator)
        fan_in = features * (1 if kernel_size is None else kernel_size ** 2)
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound, generator=generator)

    @property
    def is_conv(self) -> bool:
        return self.kernel_size is not None

    @property
    def padding(self) -> int:
        return 0 if self.kernel_size is None else self.kernel_size // 2

    def check_input_shape(self, input_shape) -> tuple[int, ...]:
        """Validate an input batch shape for this layer and return it."""
        return check_batch_shape(input_shape, (4,) if self.is_conv else (2,), self.features,
                                 type(self).__name__)

    def check_weights(self) -> None:
        """Raise BadInputError if a parameter holds NaN or Inf."""
        for name, value in self.named_parameters():
            check_finite(value.detach(), f"{type(self).__name__}.{name}")

    def apply_map(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``A x`` (plus ``bias`` per hidden channel)."""
        if self.is_conv:
            return F.conv2d(x, self.weight, bias, padding=self.padding)
        return F.linear(x, self.weight, bias)

    def apply_adjoint(self, h: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``A^* h``, or the adjoint of the same map with another ``weight`` of equal shape."""
        weight = self.weight if weight is None else weight
        if self.is_conv:
            return F.conv_transpose2d(h, weight, padding=self.padding)
        return F.linear(h, weight.mT)

    def residual(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``x - 2 A^* (scale * relu(A x + b))``; ``scale`` is 0-dim or one entry per hidden
        channel, and is folded into the (small) weight rather than the activations."""
        self.check_input_shape(x.shape)
        hidden = F.relu(self.apply_map(x, self.bias))
        return x + self.apply_adjoint(hidden, self.step_weight(scale))

    def step_weight(self, scale: torch.Tensor) -> torch.Tensor:
        """``-2 diag(scale) W``: the weight whose adjoint map is the residual branch's output."""
        factor = -2 * scale
        if factor.dim() == 1:
            factor = factor.view(-1, *([1] * (self.weight.dim() - 1)))
        return factor * self.weight

    def residual_vanilla(self, scale: torch.Tensor) -> nn.Module:
        """Plain-torch module computing :meth:`residual` with a fixed ``scale``."""
        weight = self.weight.detach()
        second_weight = self.step_weight(scale.detach().to(weight.dtype)).detach()
        options = {"device": weight.device, "dtype": weight.dtype}
        if self.is_conv:
            first = nn.Conv2d(self.features, self.inner, self.kernel_size, padding=self.padding,
                              **options)
            second = nn.ConvTranspose2d(self.inner, self.features, self.kernel_size,
                                        padding=self.padding, bias=False, **options)
        else:
            first = nn.Linear(self.features, self.inner, **options)
            second = nn.Linear(self.inner, self.features, bias=False, **options)
            second_weight = second_weight.mT
        with torch.no_grad():
            first.weight.copy_(weight)
            first.bias.copy_(self.bias.detach())
            second.weight.copy_(second_weight)
        return residual_graph(first, nn.ReLU(), second)

    def extra_repr(self) -> str:
        kernel = "" if self.kernel_size is None else f", kernel_size={self.kernel_size}"
        return f"{self.features}, inner={self.inner}{kernel}"
