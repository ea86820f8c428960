"""Verified minimal l2 adversarial distances: the smallest perturbation any attack finds.

Each attack (DeepFool, Carlini-Wagner) proposes a point; the point is clipped to the data
range, pulled back towards ``x`` along the segment by bisection as long as the prediction
stays changed, and kept only if a final forward pass confirms the prediction differs from
``y``. The distance is therefore an empirical UPPER bound on the true distance to the
decision boundary (the true robust radius), never below it: a certified radius larger than
this distance is a broken certificate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipcert.attacks.carlini_wagner import carlini_wagner_l2
from lipcert.attacks.common import (
    DATA_RANGE,
    Bounds,
    Model,
    as_column,
    check_batch,
    check_eot,
    clamp_to,
    l2_norms,
    predict,
    warned_once,
)
from lipcert.attacks.deepfool import deepfool
from lipcert.errors import BadInputError

METHODS = ("deepfool", "cw", "best")


def minimal_l2_distance(
    model: Model,
    x: Tensor,
    y: Tensor,
    method: str = "best",
    *,
    clip: Bounds = DATA_RANGE,
    deepfool_steps: int = 50,
    cw_steps: int = 100,
    cw_binary_search_steps: int = 9,
    bisection_steps: int = 16,
    eot: int = 1,
    votes: int = 1,
) -> Tensor:
    """Per-sample smallest verified l2 perturbation that changes the prediction away from ``y``.

    Args:
        model: maps a batch to logits (N, classes), in eval mode.
        x: clean inputs (N, ...), inside ``clip``.
        y: labels (N,).
        method: ``"deepfool"``, ``"cw"`` (Carlini-Wagner l2) or ``"best"`` (the smaller of both).
        clip: data range ``(low, high)``; None for no box.
        deepfool_steps, cw_steps, cw_binary_search_steps: attack budgets.
        bisection_steps: halvings of the segment from ``x`` to each adversarial point.
        eot: noise draws averaged by the attacks at every step (randomized models).
        votes: predictions are the majority over this many forward passes (fresh noise in
            each); use > 1 for a randomized model, whose single forward is a coin toss.

    Returns:
        Distances (N,) in float64 (measured between the float64 copies of ``x`` and of the
        adversarial point): 0 where ``x`` is already misclassified, ``inf`` where no attack
        found a point whose prediction differs from ``y``.
    """
    if method not in METHODS:
        raise BadInputError(f"method must be one of {METHODS}, got {method!r}.")
    check_batch(x, y, clip)
    check_eot(model, eot, votes, stacklevel=3)
    x = x.detach()
    distance = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
    if x.shape[0] == 0:
        return distance
    with warned_once():
        proposals = _proposals(model, x, y, method, clip, deepfool_steps, cw_steps,
                               cw_binary_search_steps, eot)
    for proposal in proposals:
        point = shrink_to_boundary(model, x, y, proposal, clip=clip, steps=bisection_steps,
                                   votes=votes)
        distance = torch.minimum(distance, verified_distance(model, x, y, point, clip, votes))
    return torch.where(predict(model, x, votes) != y, torch.zeros_like(distance), distance)


def _proposals(model: Model, x: Tensor, y: Tensor, method: str, clip: Bounds,
               deepfool_steps: int, cw_steps: int, cw_binary_search_steps: int,
               eot: int) -> list[Tensor]:
    proposals = []
    if method in ("deepfool", "best"):
        proposals.append(deepfool(model, x, steps=deepfool_steps, clip=clip, eot=eot))
    if method in ("cw", "best"):
        proposals.append(
            carlini_wagner_l2(
                model, x, y, steps=cw_steps, binary_search_steps=cw_binary_search_steps,
                clip=clip, eot=eot,
            )
        )
    return proposals


def verified_distance(model: Model, x: Tensor, y: Tensor, point: Tensor, clip: Bounds,
                      votes: int = 1) -> Tensor:
    """l2 distance (float64) from ``x`` to ``point`` clipped to the data range where a forward
    pass (the majority of ``votes`` of them) confirms its prediction differs from ``y``;
    ``inf`` elsewhere."""
    point = clamp_to(point, clip)
    changed = predict(model, point, votes) != y
    distance = l2_norms(point.double() - x.double())
    return torch.where(changed, distance, torch.full_like(distance, math.inf))


def shrink_to_boundary(
    model: Model, x: Tensor, y: Tensor, point: Tensor, *, clip: Bounds, steps: int,
    votes: int = 1,
) -> Tensor:
    """Bisect the segment from ``x`` to ``point`` for the point closest to ``x`` that is still
    misclassified; samples whose ``point`` is not misclassified are returned unchanged.

    The segment lies inside the data range (a box is convex), and every returned point other
    than the unchanged ones was itself evaluated as misclassified.
    """
    point = clamp_to(point, clip)
    direction = point - x
    inside = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # not misclassified at x
    outside = torch.ones_like(inside)  # misclassified (when point is)
    for _ in range(steps):
        middle = (inside + outside) / 2
        changed = predict(model, x + as_column(middle, x) * direction, votes) != y
        outside = torch.where(changed, middle, outside)
        inside = torch.where(changed, inside, middle)
    return x + as_column(outside, x) * direction
