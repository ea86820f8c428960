"""Gradient-norm-preserving activations: GroupSort, MaxMin, Householder.

Each is piecewise linear with an orthogonal Jacobian almost everywhere (a permutation or a
reflection) and continuous, so it is 1-Lipschitz with constant exactly 1 (Anil, Lucas, Grosse,
ICML 2019, arXiv 1811.05381; Singla, Singla, Feizi, ICLR 2022, arXiv 2108.04062).
All act along dimension 1 (channels of ``(N, C, H, W)`` or features of ``(N, F)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers._shapes import check_batch_shape, is_traced, unit_bound
from lipcert.layers.export import traced
from lipcert.linalg import NormBound

__all__ = ["GroupSort", "MaxMin", "HouseholderActivation"]


class _ChannelGroups(nn.Module):
    """Base of activations acting on consecutive groups of ``group_size`` channels."""

    def __init__(self, group_size: int) -> None:
        super().__init__()
        if int(group_size) < 1:
            raise BadInputError(f"group_size must be a positive integer, got {group_size}.")
        self.group_size = int(group_size)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exactly 1: the Jacobian is orthogonal wherever it exists."""
        shape = check_batch_shape(input_shape, (2, 3, 4, 5), None, type(self).__name__)
        if shape[1] % self.group_size:
            raise BadInputError(f"{type(self).__name__}: {shape[1]} channels are not divisible "
                                f"by the group size {self.group_size}.")
        return unit_bound(type(self).__name__.lower())

    def vanilla(self, input_shape=None) -> nn.Module:
        """A torch.fx GraphModule of plain torch operations."""
        return traced(self)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class GroupSort(_ChannelGroups):
    """Sort each group of ``group_size`` consecutive channels in decreasing order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_traced(x):
            self.lipschitz_bound(x.shape)  # validates the channel count
        groups = x.unflatten(1, (-1, self.group_size))
        return groups.sort(dim=2, descending=True).values.flatten(1, 2)


class MaxMin(GroupSort):
    """GroupSort with groups of two: each channel pair becomes (max, min)."""

    def __init__(self) -> None:
        super().__init__(2)

    def extra_repr(self) -> str:
        return ""


class HouseholderActivation(_ChannelGroups):
    """Householder activation of order 1 on channel pairs (Singla et al., arXiv 2108.04062).

    For each pair ``z`` with learnable unit vector ``v = (cos theta, sin theta)``:
    ``z`` if ``v . z > 0`` else ``(I - 2 v v^T) z``. The reflection fixes the hyperplane
    ``v . z = 0`` so the map is continuous; both pieces are orthogonal. ``theta = -pi/4``
    (the initial value) gives MaxMin.

    Args:
        channels: number of channels (even); one angle per pair.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(2)
        if channels <= 0 or channels % 2:
            raise BadInputError(f"HouseholderActivation needs a positive even number of "
                                f"channels, got {channels}.")
        self.channels = channels
        self.theta = nn.Parameter(torch.full((channels // 2,), -math.pi / 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_traced(x):
            self.lipschitz_bound(x.shape)  # validates the channel count
        pairs = x.movedim(1, -1).unflatten(-1, (-1, 2))
        v = torch.stack((torch.cos(self.theta), torch.sin(self.theta)), dim=1)
        projection = (pairs * v).sum(dim=-1, keepdim=True)
        reflected = pairs - 2 * projection * v
        return torch.where(projection > 0, pairs, reflected).flatten(-2).movedim(-1, 1)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exactly 1 (orthogonal pieces, continuous)."""
        check_batch_shape(input_shape, (2, 3, 4, 5), self.channels, "HouseholderActivation")
        return unit_bound("householder")

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
