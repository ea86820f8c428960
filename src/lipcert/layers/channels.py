"""Channel padding and selection: ``ZeroChannelPad`` (an isometry) and ``FirstChannels``
(an orthogonal projection). Both have Lipschitz constant exactly 1 (for ``FirstChannels``,
as long as at least one channel is kept). They act along dimension 1 of any batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers._shapes import check_batch_shape, is_traced, unit_bound
from lipcert.layers.export import traced
from lipcert.linalg import NormBound

__all__ = ["ZeroChannelPad", "FirstChannels"]


def _positive(value: int, what: str) -> int:
    if int(value) < 1:
        raise BadInputError(f"{what} must be a positive integer, got {value}.")
    return int(value)


class ZeroChannelPad(nn.Module):
    """Append zero channels so the output has ``out_channels`` channels (as in the SLL models).

    Args:
        out_channels: channels of the output; inputs with more channels are rejected.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = _positive(out_channels, "out_channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_traced(x):
            self.lipschitz_bound(x.shape)  # validates the channel count
        moved = x.movedim(1, -1)
        padded = F.pad(moved, (0, self.out_channels - moved.shape[-1]))
        return padded.movedim(-1, 1)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exactly 1: padding with zeros preserves distances."""
        shape = check_batch_shape(input_shape, (2, 3, 4, 5), None, "ZeroChannelPad")
        if shape[1] > self.out_channels:
            raise BadInputError(f"ZeroChannelPad: input has {shape[1]} channels, more than "
                                f"out_channels={self.out_channels}.")
        return unit_bound("zero-channel-pad")

    def vanilla(self, input_shape=None) -> nn.Module:
        """A torch.fx GraphModule of plain torch operations."""
        return traced(self)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


class FirstChannels(nn.Module):
    """Keep the first ``channels`` channels (e.g. the class logits after a square SLL block).

    Args:
        channels: number of leading channels kept.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _positive(channels, "channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_traced(x):
            self.lipschitz_bound(x.shape)  # validates the channel count
        return x[:, : self.channels]

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exactly 1: a coordinate projection."""
        shape = check_batch_shape(input_shape, (2, 3, 4, 5), None, "FirstChannels")
        if shape[1] < self.channels:
            raise BadInputError(f"FirstChannels: input has {shape[1]} channels, fewer than "
                                f"the {self.channels} requested.")
        return unit_bound("first-channels")

    def vanilla(self, input_shape=None) -> nn.Module:
        """A torch.fx GraphModule of plain torch operations."""
        return traced(self)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
