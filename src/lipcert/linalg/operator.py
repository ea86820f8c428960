"""Operator norm of a torch linear layer: :func:`operator_norm`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.linalg.conv import conv_norm
from lipcert.linalg.dense import dense_norm
from lipcert.linalg.result import NormBound

__all__ = ["operator_norm"]


def _check_shape(input_shape: Sequence[int], rank: int, channels: int, what: str) -> None:
    shape = tuple(input_shape)
    if len(shape) != rank or any(not isinstance(s, int) or s < 1 for s in shape):
        raise BadInputError(
            f"{what} takes inputs of rank {rank} (batch first), got input_shape {shape}."
        )
    if shape[1] != channels:
        raise BadInputError(
            f"{what} expects {channels} input channels/features, input_shape {shape} has "
            f"{shape[1]}."
        )


def operator_norm(module: nn.Module, input_shape: Sequence[int], method: str = "auto") -> NormBound:
    """Spectral norm of the linear part (bias ignored) of ``nn.Linear``/``Conv1d``/``Conv2d``.

    Args:
        module: the layer. Convolutions must have ``dilation=1`` and ``groups=1`` and
            ``padding_mode`` ``"zeros"`` or ``"circular"``.
        input_shape: shape of an input batch: ``(N, features)`` for ``nn.Linear`` (extra
            leading dimensions are allowed: the map acts on the last one), ``(N, C, L)`` or
            ``(N, C, H, W)`` for convolutions.
        method: ``"auto"`` (``exact`` for dense layers; see :func:`conv_norm` for
            convolutions), or a method of :data:`DENSE_METHODS` / :data:`CONV_METHODS`.

    Raises:
        UnsupportedLayerError: another module type, dilation, groups > 1, other padding modes.
        BadInputError: input shape that does not fit the layer, bad weights or method.
    """
    if isinstance(module, nn.Linear):
        shape = tuple(input_shape)
        if len(shape) < 1 or shape[-1] != module.in_features:
            raise BadInputError(
                f"nn.Linear({module.in_features}, {module.out_features}) needs inputs whose "
                f"last dimension is {module.in_features}, got input_shape {shape}."
            )
        return dense_norm(module.weight, "exact" if method == "auto" else method)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not isinstance(
        module, (nn.ConvTranspose1d, nn.ConvTranspose2d)
    ):
        name = type(module).__name__
        if any(d != 1 for d in module.dilation):
            raise UnsupportedLayerError(
                f"{name} with dilation {module.dilation} is not supported; use dilation 1."
            )
        if module.groups != 1:
            raise UnsupportedLayerError(
                f"{name} with groups={module.groups} is not supported; use groups=1."
            )
        if module.padding_mode not in ("zeros", "circular"):
            raise UnsupportedLayerError(
                f"{name} with padding_mode={module.padding_mode!r} is not supported; use "
                "'zeros' or 'circular'."
            )
        spatial = module.weight.dim() - 2
        _check_shape(input_shape, spatial + 2, module.in_channels, name)
        return conv_norm(
            module.weight,
            tuple(input_shape)[2:],
            stride=module.stride,
            padding=module.padding,
            padding_mode=module.padding_mode,
            method=method,
        )
    raise UnsupportedLayerError(
        f"operator_norm supports nn.Linear, nn.Conv1d and nn.Conv2d, not {type(module).__name__}."
    )
