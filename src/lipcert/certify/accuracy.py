"""Certified accuracy from certified radii."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lipcert.errors import BadInputError


def certified_accuracy(radii: torch.Tensor, eps: float | Iterable[float]) -> dict[float, float]:
    """Fraction of points certified at each radius in ``eps``: those with radius > eps.

    ``radii`` holds one certified radius per point, 0 for wrong predictions (as returned by
    :func:`lipcert.certify.lipschitz_radii` with labels), so this is certified accuracy.
    """
    if not torch.is_tensor(radii) or radii.dim() != 1 or radii.numel() == 0:
        raise BadInputError("radii must be a non-empty 1-D tensor (one radius per point).")
    if bool(torch.isnan(radii).any()):
        raise BadInputError("radii contain NaN.")
    values = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
    if any(e < 0 for e in values):
        raise BadInputError(f"eps must be >= 0, got {values}.")
    return {e: float((radii > e).double().mean()) for e in values}
