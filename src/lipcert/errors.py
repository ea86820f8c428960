"""The errors lipcert raises.

Every error derives from :class:`LipcertError`, so ``except LipcertError`` catches all of them.
Messages say what went wrong and what to do about it. The subclasses also derive from the
matching built-in exception (``ValueError``, ``TypeError``) so generic handlers still work.
"""

from __future__ import annotations


class LipcertError(Exception):
    """Base class of every error raised by lipcert."""


class BadInputError(LipcertError, ValueError):
    """An argument is malformed: wrong shape or rank, NaN/Inf values, unknown option name."""


class DataError(BadInputError):
    """A data set is unknown, missing, truncated or corrupted; the message names the file."""


class CheckpointError(BadInputError):
    """A checkpoint file or its JSON spec is missing, corrupted or does not match the model."""


class UnsupportedLayerError(LipcertError, TypeError):
    """A module or function has no Lipschitz rule; lipcert refuses to skip it silently."""


class MissingDependencyError(LipcertError, ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


class UnsoundRequestError(LipcertError):
    """The request would produce a certificate that is not guaranteed.

    Example: certifying with an ``estimate`` (a number that may lie below the truth) where an
    ``exact`` value or an ``upper`` bound is required.
    """


def check_finite(tensor, what: str) -> None:
    """Raise :class:`BadInputError` if ``tensor`` holds NaN or Inf; ``what`` names it."""
    import torch

    if not torch.is_tensor(tensor):
        raise BadInputError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}.")
    if not bool(torch.isfinite(tensor).all()):
        raise BadInputError(
            f"{what} contains NaN or Inf values; a bound computed from it would be meaningless. "
            "Check the training run that produced it (learning rate, initialization)."
        )


def check_labels(y, batch: int, classes: int, device=None):
    """``y`` as int64 of shape ``(batch,)`` on ``device`` (default: its own) with every label in
    ``[0, classes)``, or a one-line :class:`BadInputError` (wrong type or shape, bool or
    complex, fractional or NaN labels, labels out of range). ``None`` gives ``None``."""
    import torch

    if y is None:
        return None
    if not torch.is_tensor(y):
        raise BadInputError(f"y must be a tensor of class indices, got {type(y).__name__}.")
    if y.shape != (batch,):
        raise BadInputError(f"y has shape {tuple(y.shape)}, expected ({batch},).")
    if y.dtype == torch.bool or y.is_complex():
        raise BadInputError(f"y must hold integer class indices, got dtype {y.dtype}.")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or bool((y != y.round()).any()):
            raise BadInputError(
                "y holds fractional or NaN/Inf labels; class labels must be whole numbers "
                "(pass y.long() only if that is what you mean)."
            )
    labels = y.to(device=y.device if device is None else device, dtype=torch.long)
    if bool(((labels < 0) | (labels >= classes)).any()):
        raise BadInputError(f"labels must lie in [0, {classes}).")
    return labels


def error_text(err: BaseException) -> str:
    """The message of ``err`` without what torch.fx appends to errors raised while it runs a
    traced graph ("While executing %node ... Original traceback: ...")."""
    text = str(err)
    for marker in ("\n\nWhile executing ", "\nWhile executing "):
        text = text.split(marker)[0]
    return text.strip()
