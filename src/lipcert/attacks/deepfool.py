"""DeepFool, l2 (Moosavi-Dezfooli, Fawzi, Frossard 2016, arXiv 1511.04599).

At every iterate the classifier is linearized around the current point: for each candidate
class k, ``f_k = z_k - z_c`` (c the original prediction) with gradient ``w_k``; the nearest
linearized boundary is ``l = argmin_k |f_k| / ||w_k||`` and the step is
``(|f_l| + 1e-4) w_l / ||w_l||^2``. Steps accumulate into ``r``; the iterate is
``x + (1 + overshoot) r``, clipped to the data range, until the prediction changes; a sample
whose prediction has changed leaves the batch (the later steps cost nothing for it).

On an affine classifier one step lands (1 + overshoot) times beyond the exact closest
boundary point. The result is an empirical upper bound on the distance to the boundary, not
a certificate: use :func:`lipcert.attacks.minimal_l2_distance` to get verified distances.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipcert.attacks.common import (
    DATA_RANGE,
    Bounds,
    Model,
    as_column,
    check_batch,
    check_eot,
    clamp_to,
    eot_logits,
    input_gradients,
    l2_norms,
)
from lipcert.errors import BadInputError

_TINY = 1e-12


@input_gradients
def deepfool(
    model: Model,
    x: Tensor,
    steps: int = 50,
    overshoot: float = 0.02,
    num_classes: int | None = None,
    *,
    clip: Bounds = DATA_RANGE,
    eot: int = 1,
) -> Tensor:
    """Small l2 perturbations of ``x`` that change the model's prediction.

    Args:
        model: maps a batch to logits (N, classes), in eval mode (its mode is not changed).
        x: clean inputs (N, ...), inside ``clip``.
        steps: most linearization steps per sample.
        overshoot: relative step beyond the linearized boundary.
        num_classes: candidate classes per sample, the top-scoring ones at ``x`` (the
            original prediction included); None for all classes.
        clip: data range ``(low, high)``; None for no box.
        eot: for a randomized model, linearize the mean of ``eot`` forward passes (logits
            averaged over fresh noise draws; their gradient is the mean of the per-draw ones);
            ``eot=1`` on a model with NoiseInjection warns.

    Returns:
        The batch of iterates: for each sample the first iterate whose prediction differs
        from the prediction at ``x``, or the last one if none did within ``steps``.
    """
    check_batch(x, clip=clip)
    check_eot(model, eot, stacklevel=4)
    if steps < 0 or overshoot < 0:
        raise BadInputError(f"need steps >= 0 and overshoot >= 0, got {steps} and {overshoot}.")
    x = x.detach()
    with torch.no_grad():
        logits = eot_logits(model, x, eot)
    classes = logits.shape[1]
    count = classes if num_classes is None else int(num_classes)
    if not 2 <= count <= classes:
        raise BadInputError(f"num_classes must be in [2, {classes}], got {num_classes}.")
    ranking = logits.argsort(dim=1, descending=True)
    original = logits.argmax(dim=1)
    candidates = _others(ranking[:, :count], original)

    total = torch.zeros_like(x)
    x_adv = x.clone()
    rows = torch.arange(x.shape[0], device=x.device)  # samples not flipped yet
    for _ in range(steps):
        with torch.enable_grad():
            x_var = x_adv[rows].requires_grad_(True)
            logits = eot_logits(model, x_var, eot)
            active = logits.argmax(dim=1) == original[rows]
            if not bool(active.any()):
                break
            step = _nearest_boundary_step(logits, x_var, original[rows], candidates[rows])
        # a flipped sample keeps its iterate (the first one that changed the prediction)
        rows, step = rows[active], step[active]
        total[rows] = total[rows] + step
        x_adv[rows] = clamp_to(x[rows] + (1 + overshoot) * total[rows], clip)
    return x_adv


def _nearest_boundary_step(logits: Tensor, x_var: Tensor, original: Tensor,
                           candidates: Tensor) -> Tensor:
    """DeepFool's step per sample: onto the nearest linearized boundary among ``candidates``
    (its length ``|f_l| / ||w_l||`` plus 1e-4 / ||w_l||)."""
    own = logits.gather(1, original[:, None]).squeeze(1)
    best_ratio = torch.full_like(own, math.inf).detach()
    best_step = torch.zeros_like(x_var)
    for column in range(candidates.shape[1]):
        gap = logits.gather(1, candidates[:, column : column + 1]).squeeze(1) - own
        more = column + 1 < candidates.shape[1]
        (direction,) = torch.autograd.grad(gap.sum(), x_var, retain_graph=more)
        gap = gap.detach()
        length = l2_norms(direction).clamp_min(_TINY)
        ratio = gap.abs() / length
        closer = ratio < best_ratio
        step = direction * as_column((gap.abs() + 1e-4) / length**2, x_var)
        best_step = torch.where(as_column(closer, x_var), step, best_step)
        best_ratio = torch.where(closer, ratio, best_ratio)
    return best_step


def _others(top: Tensor, original: Tensor) -> Tensor:
    """The candidate classes of each row of ``top`` (N, k) other than ``original``: (N, k-1).

    ``original`` is the argmax, so it sits in every row of ``top`` (ties may move it from the
    first column; it is removed wherever it is).
    """
    keep = top != original[:, None]
    missing = keep.all(dim=1)
    keep[missing, -1] = False  # the argmax tied with, and ranked below, the last candidate
    return top[keep].reshape(top.shape[0], top.shape[1] - 1)
