"""Geometry of a convolution: which circular operator dominates it, and by how much.

A 1-D or 2-D convolution (cross-correlation, as in torch) with input size ``n``, kernel size
``k``, stride ``s`` and padding ``(left, right)`` is analysed per spatial axis:

- **circular padding**: output ``i`` reads the circularly padded input at position
  ``i s - left (mod n)``. Up to a circular shift of the input (a unitary map) its rows are
  rows of the circular operator on the grid ``n`` with stride ``s`` when ``s`` divides ``n``
  (the *base* operator, computed exactly by the polyphase split of Senderovich et al.
  2022), else of the stride-1 circular operator. Rows may repeat when the output is longer
  than the grid; a row repeated ``m`` times multiplies the norm by at most ``sqrt(m)``. The
  operator *equals* the base operator (up to unitary permutations) when every base row
  appears exactly once.
- **zero padding**: the input is embedded in a zero grid of size ``N >= n + left + right``
  (rounded up to a multiple of ``s``); no tap ever reaches past ``n + left + right - 1``, so
  the operator is a compression (a row and column selection) of the strided circular
  operator on that grid, whose norm is therefore an upper bound. A 1-tap axis without
  padding is treated as circular (it is one).

The reshape bounds use two counts per axis: ``input_count``, the most (row, tap) pairs that
read one input entry, and ``output_count``, the most taps of one output row that read an
input entry (not padding); see :mod:`lipcert.linalg.conv_bounds`.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lipcert.errors import BadInputError

__all__ = ["AxisGeometry", "ConvGeometry", "conv_geometry", "PADDING_MODES"]

PADDING_MODES: tuple[str, ...] = ("zeros", "circular")


@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of a convolution (see the module docstring)."""

    size: int
    kernel: int
    stride: int
    left: int
    right: int
    circular: bool

    @property
    def out(self) -> int:
        """Output length, as torch computes it."""
        return (self.size + self.left + self.right - self.kernel) // self.stride + 1

    @property
    def base_stride(self) -> int:
        """Stride of the dominating circular operator (polyphase when it is > 1)."""
        if self.circular and self.size % self.stride != 0:
            return 1
        return self.stride

    @property
    def grid(self) -> int:
        """Size of the circular grid of the dominating operator (a multiple of base_stride)."""
        if self.circular:
            return self.size
        padded = self.size + self.left + self.right
        return math.ceil(padded / self.stride) * self.stride

    def _row_positions(self) -> list[int]:
        """Circular position of each output row (circular axes only)."""
        return [(i * self.stride - self.left) % self.size for i in range(self.out)]

    @property
    def multiplicity(self) -> int:
        """How often the most repeated output row repeats (1 for zero padding)."""
        if not self.circular:
            return 1
        return max(Counter(self._row_positions()).values())

    @property
    def exact(self) -> bool:
        """True when the operator equals the base circular operator up to permutations."""
        if not self.circular:
            return False
        positions = self._row_positions()
        distinct = len(set(positions))
        return distinct == len(positions) == self.grid // self.base_stride

    def _reads(self) -> list[list[int]]:
        """For each distinct output row, the input indices its taps read (padding dropped)."""
        if self.circular:
            rows = sorted(set(self._row_positions()))
            return [[(q + a) % self.size for a in range(self.kernel)] for q in rows]
        reads = []
        for i in range(self.out):
            start = i * self.stride - self.left
            reads.append([start + a for a in range(self.kernel) if 0 <= start + a < self.size])
        return reads

    @property
    def input_count(self) -> int:
        """Most (distinct row, tap) pairs that read one input entry."""
        counts = Counter(j for row in self._reads() for j in row)
        return max(counts.values(), default=0)

    @property
    def output_count(self) -> int:
        """Most taps of one distinct output row that read an input entry."""
        return max((len(row) for row in self._reads()), default=0)


@dataclass(frozen=True)
class ConvGeometry:
    """All spatial axes of a convolution with ``c_out x c_in`` channels."""

    axes: tuple[AxisGeometry, ...]
    circular: bool

    @property
    def exact(self) -> bool:
        """True when the operator equals its base circular operator (frequency SVD is exact)."""
        return all(axis.exact for axis in self.axes)

    @property
    def multiplicity(self) -> int:
        """Product of the per-axis row multiplicities."""
        return math.prod(axis.multiplicity for axis in self.axes)

    @property
    def base_strides(self) -> tuple[int, ...]:
        return tuple(axis.base_stride for axis in self.axes)

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(axis.grid for axis in self.axes)

    @property
    def strided_by_subsampling(self) -> bool:
        """True when some stride is handled by the (looser) stride-1 bound, not polyphase."""
        return any(axis.base_stride != axis.stride for axis in self.axes)

    @property
    def output_size(self) -> tuple[int, ...]:
        return tuple(axis.out for axis in self.axes)


def _per_axis(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    """One int per axis from an int or a sequence of ints (numpy/torch integers accepted)."""
    message = f"{name} must be an int or a tuple of {dims} ints, got {value!r}."
    if isinstance(value, bool):
        raise BadInputError(message)
    try:
        values = (operator.index(value),) * dims
    except TypeError:
        try:
            values = tuple(operator.index(v) for v in value if not isinstance(v, bool))
        except TypeError:
            raise BadInputError(message) from None
    if len(values) != dims:
        raise BadInputError(message)
    return values


def _padding_pairs(
    padding: int | str | Sequence[int], kernel: tuple[int, ...], stride: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """``(left, right)`` per axis, following torch (``"same"`` puts the odd pixel right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in kernel)
        if padding == "same":
            if any(s != 1 for s in stride):
                raise BadInputError(
                    "padding='same' is only defined for stride 1 (as in torch); give the "
                    "padding as numbers for strided convolutions."
                )
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
        raise BadInputError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}.")
    pads = _per_axis(padding, len(kernel), "padding")
    if any(p < 0 for p in pads):
        raise BadInputError(f"padding must be non-negative, got {padding!r}.")
    return tuple((p, p) for p in pads)


def conv_geometry(
    kernel_size: Sequence[int],
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    padding_mode: str = "zeros",
) -> ConvGeometry:
    """Validate the arguments of a convolution and describe its geometry.

    Raises:
        BadInputError: bad stride/padding/size, unknown padding mode, an input (plus padding)
            smaller than the kernel, or circular padding wider than the input (as torch).
    """
    dims = len(kernel_size)
    if padding_mode not in PADDING_MODES:
        raise BadInputError(
            f"padding_mode {padding_mode!r} is not supported; use one of {list(PADDING_MODES)} "
            "(reflect/replicate padding have no circulant structure)."
        )
    sizes = _per_axis(input_size, dims, "input_size")
    strides = _per_axis(stride, dims, "stride")
    if any(n < 1 for n in sizes):
        raise BadInputError(f"input_size must be positive, got {input_size!r}.")
    if any(s < 1 for s in strides):
        raise BadInputError(f"stride must be positive, got {stride!r}.")
    pairs = _padding_pairs(padding, tuple(kernel_size), strides)
    circular = padding_mode == "circular"
    axes = []
    for n, k, s, (left, right) in zip(sizes, kernel_size, strides, pairs, strict=True):
        if n + left + right < k:
            raise BadInputError(
                f"input size {n} (padded by {left}+{right}) is smaller than the kernel size {k}; "
                "the convolution is undefined. Give the true input size of the layer."
            )
        if circular and max(left, right) > n:
            raise BadInputError(
                f"circular padding {max(left, right)} is larger than the input size {n} "
                "(torch refuses it too)."
            )
        axis_circular = circular or (k == 1 and left == right == 0)
        axes.append(AxisGeometry(n, k, s, left, right, axis_circular))
    return ConvGeometry(tuple(axes), circular)
