"""Input normalization ``(x - mean) / std`` as a module that knows its Lipschitz constant."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.linalg.result import NormBound


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for inputs of shape (N, C, ...).

    Its l2 Lipschitz constant is exactly ``1 / min |std|`` (a diagonal linear map plus a shift).
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype()).flatten()
        std = torch.as_tensor(std, dtype=torch.get_default_dtype()).flatten()
        if mean.shape != std.shape:
            raise BadInputError(f"mean and std need one value per channel; got {mean.numel()} "
                                f"and {std.numel()} values.")
        if not bool((std != 0).all() and torch.isfinite(std).all() and torch.isfinite(mean).all()):
            raise BadInputError("std must be finite and non-zero, and mean finite.")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _channel_view(self, tensor: torch.Tensor, ndim: int) -> torch.Tensor:
        return tensor.view(1, -1, *([1] * (ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._channel_view(self.mean, x.dim())) / self._channel_view(self.std, x.dim())

    def lipschitz_bound(self, input_shape: torch.Size) -> NormBound:
        """Exactly ``1 / min |std|`` when the input has one channel per value. A one-channel
        input broadcast against C values sends each entry to C outputs scaled by 1 / std_c:
        orthogonal Jacobian columns of norm exactly ``sqrt(sum_c 1 / std_c^2)``."""
        if len(input_shape) < 2:
            raise BadInputError(f"Normalize expects inputs of shape (N, C, ...), got "
                                f"{tuple(input_shape)}.")
        channels, count = int(input_shape[1]), self.std.numel()
        inverse = 1.0 / self.std.to(torch.float64).abs()
        if channels == 1 and count > 1:
            return NormBound(inverse.square().sum().sqrt(), "exact",
                             "sqrt(sum 1/std^2) (one channel broadcast)")
        if count not in (1, channels):
            raise BadInputError(f"Normalize holds {count} channel values but the input has "
                                f"{channels} channels.")
        return NormBound(inverse.max(), "exact", "1/min|std|")

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"
