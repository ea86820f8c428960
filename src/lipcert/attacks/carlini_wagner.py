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
    check_batch,
    check_eot,
    clamp_to,
    eot_logits,
    input_gradients,
    l2_norms,
    margin,
    per_sample,
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
    initial_const: float | Tensor = 1.0,
    confidence: float = 0.0,
    learning_rate: float = 0.01,
    targeted: bool = False,
    clip: Bounds = DATA_RANGE,
    abort_early: bool = True,
    eot: int = 1,
    start: Tensor | None = None,
) -> Tensor:
    """Small l2 perturbations of ``x`` that make the model misclassify ``y``.

    Args:
        model: maps a batch to logits (N, classes), in eval mode (its mode and its parameters'
            ``.grad`` are left alone).
        x: clean inputs (N, ...), inside ``clip``.
        y: labels (N,); with ``targeted=True`` the target classes.
        steps: Adam steps per binary-search round.
        binary_search_steps: rounds of the search over the constant ``c``.
        initial_const: starting ``c``, a number or one per sample (N,), > 0.
        confidence: margin (kappa) the adversarial class must win by.
        learning_rate: Adam step size.
        targeted: reach class ``y`` instead of leaving it.
        clip: data range ``(low, high)``; None for no box.
        abort_early: freeze a sample for the rest of a round when its objective has not
            dropped by 0.01% over the last ``steps // 10`` steps (the paper's reference code
            does this for the whole batch; per sample keeps batched and per-sample results
            equal). A frozen sample leaves the batch; the round ends when every sample is
            frozen.
        eot: for a randomized model, the objective uses the logits averaged over ``eot``
            fresh noise draws at every step (its gradient is the mean of the per-draw ones);
            ``eot=1`` on a model with NoiseInjection warns.
        start: points (N, ...) every round starts from (clipped to the data range), e.g. the
            adversarial points of another attack; None starts at ``x`` (the paper's choice).
            The start itself is evaluated like every iterate.

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
    const = per_sample(initial_const, x, "initial_const")
    if bool((const <= 0).any()) or confidence < 0 or learning_rate <= 0:
        raise BadInputError("initial_const and learning_rate must be > 0, confidence >= 0.")
    x = x.detach()
    if start is not None and start.shape != x.shape:
        raise BadInputError(f"start must have the shape of x {tuple(x.shape)}, got "
                            f"{tuple(start.shape)}.")
    origin = x if start is None else clamp_to(start.detach().to(x.dtype), clip)
    search = _Search(x, targeted, confidence)
    lower = torch.zeros_like(const)
    upper = torch.full_like(lower, math.inf)
    for _ in range(binary_search_steps):
        succeeded = search.round(model, y, const, origin, steps=steps, eot=eot, clip=clip,
                                 learning_rate=learning_rate, abort_early=abort_early)
        upper = torch.where(succeeded, torch.minimum(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
    return search.best


class _Search:
    """The smallest successful perturbation of each sample over the rounds of the search."""

    def __init__(self, x: Tensor, targeted: bool, confidence: float) -> None:
        self.x, self.targeted, self.confidence = x, targeted, confidence
        self.best = x.clone()
        self.best_distance = torch.full((x.shape[0],), math.inf, dtype=x.dtype,
                                        device=x.device)

    def round(self, model: Model, y: Tensor, const: Tensor, origin: Tensor, *, steps: int,
              eot: int, clip: Bounds, learning_rate: float, abort_early: bool) -> Tensor:
        """One round of Adam from ``origin`` at the per-sample constants; returns which
        samples succeeded. Only the samples not frozen yet are run through the model."""
        x, confidence = self.x, self.confidence
        check_every = max(steps // 10, 1)
        rows = torch.arange(x.shape[0], device=x.device)
        delta = origin - x
        adam = _Adam(x, learning_rate)
        succeeded = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        previous = torch.full_like(const, math.inf)
        for step in range(steps):
            xr, yr = x[rows], y[rows]
            with torch.enable_grad():
                delta_r = delta[rows].requires_grad_(True)
                x_adv = xr + delta_r
                logits = eot_logits(model, x_adv, eot)
                # gap > 0 while the attack has not succeeded by ``confidence``
                gap = margin(logits, yr) if self.targeted else -margin(logits, yr)
                squared = (x_adv - xr).flatten(1).pow(2).sum(dim=1)
                objective = squared + const[rows] * (gap + confidence).clamp_min(0)
                (grad,) = torch.autograd.grad(objective.sum(), delta_r)
            predicted = logits.detach().argmax(dim=1)
            hit = predicted == yr if self.targeted else predicted != yr
            success = hit & (gap.detach() <= -confidence)
            distance = l2_norms(x_adv.detach() - xr)
            closer = success & (distance < self.best_distance[rows])
            self.best[rows[closer]] = x_adv.detach()[closer]
            self.best_distance[rows[closer]] = distance[closer]
            succeeded[rows[success]] = True
            if abort_early and step % check_every == check_every - 1:
                value = objective.detach()
                keep = value <= previous[rows] * (1 - 1e-4)
                previous[rows] = value
                rows, grad = rows[keep], grad[keep]
                if len(rows) == 0:
                    break
            moved = delta[rows] - adam.step(rows, grad)
            delta[rows] = clamp_to(x[rows] + moved, clip) - x[rows]
        return succeeded


class _Adam:
    """Adam (Kingma and Ba 2015, arXiv 1412.6980; betas 0.9 and 0.999, eps 1e-8, as
    ``torch.optim.Adam``) on a batch of perturbations whose rows leave the batch: the moments
    of each row are kept with the row, and every row still running has taken every step."""

    def __init__(self, x: Tensor, learning_rate: float) -> None:
        self.first = torch.zeros_like(x)
        self.second = torch.zeros_like(x)
        self.learning_rate, self.steps = learning_rate, 0

    def step(self, rows: Tensor, grad: Tensor) -> Tensor:
        """The update (to subtract) of ``rows`` for their gradient ``grad``."""
        self.steps += 1
        first = self.first[rows].lerp_(grad, 0.1)
        second = self.second[rows].mul_(0.999).addcmul_(grad, grad, value=0.001)
        self.first[rows], self.second[rows] = first, second
        scale = self.learning_rate / (1 - 0.9**self.steps)
        denominator = second.sqrt() / math.sqrt(1 - 0.999**self.steps) + 1e-8
        return scale * first / denominator
