"""Certified accuracy from certified radii or randomized-smoothing results."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from lipcert.errors import BadInputError

if TYPE_CHECKING:
    from lipcert.certify.smoothing import SmoothingResult


def certified_accuracy(radii: torch.Tensor | SmoothingResult, eps: float | Iterable[float],
                       labels: torch.Tensor | None = None) -> dict[float, float]:
    """Fraction of points certified at each radius in ``eps``: those with radius > eps.

    ``radii`` holds one certified radius per point, 0 for wrong predictions (as returned by
    :func:`lipcert.certify.lipschitz_radii` with labels), so this is certified accuracy.

    ``radii`` may also be a :class:`lipcert.certify.SmoothingResult` (then ``labels`` is
    required): a point counts at ``eps`` when its smoothed prediction equals its label and its
    radius exceeds ``eps`` (at ``eps = 0``: a correct, non-abstained prediction). Abstentions
    count as wrong. Each smoothing certificate holds with probability ``1 - alpha``, so this is
    Cohen et al.'s "approximate certified accuracy" (arXiv 1902.02918).
    """
    from lipcert.certify.smoothing import SmoothingResult

    smoothed = isinstance(radii, SmoothingResult)
    if smoothed:
        if labels is None:
            raise BadInputError(
                "certified_accuracy of a SmoothingResult needs labels= (one label per input)."
            )
        if not torch.is_tensor(labels) or radii.prediction.shape != labels.shape:
            raise BadInputError(
                f"labels must be a tensor of shape {tuple(radii.prediction.shape)}, got "
                f"{tuple(getattr(labels, 'shape', ())) or type(labels).__name__}."
            )
        classes = radii.counts.shape[1] if radii.counts.dim() == 2 else None
        if labels.numel() and (int(labels.min()) < 0 or (
                classes is not None and int(labels.max()) >= classes)):
            raise BadInputError(
                f"labels must be class indices in 0..{(classes or 0) - 1} (the smoothed "
                f"classifier has {classes} classes); got {int(labels.min())}..{int(labels.max())}."
            )
        correct = radii.prediction.cpu() == labels.cpu().long()
        radii = radii.certified_radii(labels)
    elif labels is not None:
        raise BadInputError("labels= is only taken with a SmoothingResult; Lipschitz radii "
                            "already hold 0 for wrong predictions.")
    if not torch.is_tensor(radii) or radii.dim() != 1 or radii.numel() == 0:
        raise BadInputError("radii must be a non-empty 1-D tensor (one radius per point).")
    if bool(torch.isnan(radii).any()):
        raise BadInputError("radii contain NaN.")
    if bool((radii < 0).any()):
        raise BadInputError("radii must be >= 0 (0 for wrong predictions); got a negative one.")
    values = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
    if any(not e >= 0 for e in values):  # also refuses NaN
        raise BadInputError(f"eps must be >= 0, got {values}.")
    if smoothed:
        return {e: float((correct & ((radii > e) | (e == 0))).double().mean()) for e in values}
    return {e: float((radii > e).double().mean()) for e in values}
