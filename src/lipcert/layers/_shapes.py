"""Input-shape checks and small helpers shared by every layer's ``lipschitz_bound``."""

from __future__ import annotations

import torch
from torch import fx

from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.linalg import NormBound

__all__ = ["check_batch_shape", "unit_bound", "conv_padding", "is_traced"]


def check_batch_shape(
    input_shape, ranks: tuple[int, ...], channels: int | None, layer: str
) -> tuple[int, ...]:
    """Validate the shape of an input batch and return it as a tuple of ints.

    Args:
        input_shape: shape of a batch, ``(N, features)`` or ``(N, C, H, W)``.
        ranks: accepted lengths of the shape (2 for dense layers, 4 for convolutions).
        channels: required size of dimension 1, or ``None`` for any.
        layer: the layer's name, used in the error message.

    Raises:
        BadInputError: wrong rank, non-positive sizes, or a channel count that differs.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as err:
        raise BadInputError(f"{layer}: input_shape must be a sequence of ints, "
                            f"got {input_shape!r}.") from err
    if len(shape) not in ranks or any(s <= 0 for s in shape):
        wanted = " or ".join(f"{r}-D" for r in ranks)
        raise BadInputError(f"{layer}: input_shape must be a {wanted} batch shape with positive "
                            f"sizes, e.g. (N, C, H, W) or (N, features); got {shape}.")
    if channels is not None and shape[1] != channels:
        raise BadInputError(f"{layer}: expects {channels} channels/features in dimension 1, "
                            f"got input_shape {shape}.")
    return shape


def unit_bound(method: str, guarantee: str = "exact") -> NormBound:
    """A Lipschitz constant of exactly (or at most) one, for weight-free isometries."""
    return NormBound(torch.tensor(1.0, dtype=torch.float64), guarantee, method)


def conv_padding(padding, kernel_size: tuple[int, int], dilation: tuple[int, int],
                 layer: str) -> tuple[int, int]:
    """Turn ``nn.Conv2d``'s ``padding`` argument (int, pair, ``"valid"``, ``"same"``) into a pair.

    Raises:
        UnsupportedLayerError: ``"same"`` padding that torch would apply asymmetrically
            (even effective kernel size), whose operator lipcert does not bound.
    """
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        pads = []
        for k, d in zip(kernel_size, dilation, strict=True):
            total = d * (k - 1)
            if total % 2:
                raise UnsupportedLayerError(
                    f"{layer}: padding='same' with an even effective kernel size pads "
                    "asymmetrically; use an odd kernel size or explicit integer padding.")
            pads.append(total // 2)
        return (pads[0], pads[1])
    if isinstance(padding, int):
        return (padding, padding)
    return (int(padding[0]), int(padding[1]))


def is_traced(x) -> bool:
    """True while torch.fx traces a forward (``x`` is a Proxy): shape checks are skipped
    then, so weight-free layers export as GraphModules of plain torch operations."""
    return isinstance(x, fx.Proxy)
