"""Carlini-Wagner l2 attack (Carlini and Wagner 2017, arXiv 1608.04644).

Minimizes ``||delta||^2 + c * max(z_y - max_{j != y} z_j + confidence, 0)`` with Adam, and
binary-searches the constant ``c`` per sample: after a round in which the sample was
misclassified the upper end drops to ``c``, otherwise the lower end rises to ``c`` (times 10
while no upper end is known). The smallest successful perturbation over all rounds is kept.

Departure from the paper: the data range is enforced by projecting ``x + delta`` back onto the
box after every Adam step instead of the tanh change of variables, whose gradient vanishes at
inputs exactly at 0 or 1 (most MNIST pixels) and freezes them. The result is an empirical
upper bound on the distance to the boundary, not a certificate.
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
    margin,
)
from lipcert.errors import BadInputError


@input_gradients
def carlini_wagner_l2(
    model: Model,
    x: Tensor,
    y: Tensor,
    steps: int = 100,
    binary_search_steps: int = 9,
    *,
    initial_const: float = 1.0,
    confidence: float = 0.0,
    learning_rate: float = 0.01,
    targeted: bool = False,
    clip: Bounds = DATA_RANGE,
    abort_early: bool = True,
    eot: int = 1,
) -> Tensor:
    """Small l2 perturbations of ``x`` that make the model misclassify ``y``.

    Args:
        model: maps a batch to logits (N, classes), in eval mode (its mode and its parameters'
            ``.grad`` are left alone).
        x: clean inputs (N, ...), inside ``clip``.
        y: labels (N,); with ``targeted=True`` the target classes.
        steps: Adam steps per binary-search round.
        binary_search_steps: rounds of the search over the constant ``c``.
        initial_const: starting ``c``.
        confidence: margin (kappa) the adversarial class must win by.
        learning_rate: Adam step size.
        targeted: reach class ``y`` instead of leaving it.
        clip: data range ``(low, high)``; None for no box.
        abort_early: freeze a sample for the rest of a round when its objective has not
            dropped by 0.01% over the last ``steps // 10`` steps (the paper's reference code
            does this for the whole batch; per sample keeps batched and per-sample results
            equal); the round ends when every sample is frozen.
        eot: for a randomized model, the objective uses the logits averaged over ``eot``
            fresh noise draws at every step (its gradient is the mean of the per-draw ones);
            ``eot=1`` on a model with NoiseInjection warns.

    Returns:
        Per sample the smallest successful perturbation found, or ``x`` itself when no round
        succeeded.
    """
    check_batch(x, y, clip)
    check_eot(model, eot, stacklevel=4)
    if steps < 1 or binary_search_steps < 1:
        raise BadInputError(
            f"need steps >= 1 and binary_search_steps >= 1, got {steps}, {binary_search_steps}."
        )
    if initial_const <= 0 or confidence < 0 or learning_rate <= 0:
        raise BadInputError("initial_const and learning_rate must be > 0, confidence >= 0.")
    x = x.detach()
    count = x.shape[0]
    check_every = max(steps // 10, 1)
    lower = torch.zeros(count, dtype=x.dtype, device=x.device)
    upper = torch.full_like(lower, math.inf)
    const = torch.full_like(lower, initial_const)
    best = x.clone()
    best_distance = torch.full_like(lower, math.inf)
    for _ in range(binary_search_steps):
        delta = torch.zeros_like(x, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=learning_rate)
        succeeded = torch.zeros(count, dtype=torch.bool, device=x.device)
        previous = torch.full_like(lower, math.inf)
        active = torch.ones(count, dtype=torch.bool, device=x.device)
        for step in range(steps):
            with torch.enable_grad():
                x_adv = x + delta
                logits = eot_logits(model, x_adv, eot)
                # gap > 0 while the attack has not succeeded by ``confidence``
                gap = margin(logits, y) if targeted else -margin(logits, y)
                squared = (x_adv - x).flatten(1).pow(2).sum(dim=1)
                objective = squared + const * (gap + confidence).clamp_min(0)
                (delta.grad,) = torch.autograd.grad(objective.sum(), delta)
            predicted = logits.detach().argmax(dim=1)
            hit = predicted == y if targeted else predicted != y
            success = hit & (gap.detach() <= -confidence)
            distance = l2_norms(x_adv.detach() - x)
            closer = success & (distance < best_distance)
            best = torch.where(as_column(closer, x), x_adv.detach(), best)
            best_distance = torch.where(closer, distance, best_distance)
            succeeded |= success
            if abort_early and step % check_every == check_every - 1:
                value = objective.detach()
                active &= value <= previous * (1 - 1e-4)
                previous = value
                if not bool(active.any()):
                    break
            before = delta.detach().clone()
            optimizer.step()
            with torch.no_grad():
                moved = clamp_to(x + delta, clip) - x
                delta.copy_(torch.where(as_column(active, x), moved, before))
        upper = torch.where(succeeded, torch.minimum(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
    return best
