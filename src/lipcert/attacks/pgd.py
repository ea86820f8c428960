"""Projected gradient descent (PGD) under the l2 and l-infinity norms.

Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks" (arXiv 1706.06083): ascend the loss from a random start inside the ball,
projecting back onto the ball and the data range after every step. l2 steps follow the
normalized gradient, l-infinity steps its sign. Every iterate is evaluated, and the best one
per sample is returned (not just the last).

Randomized models (:class:`lipcert.layers.NoiseInjection`): with ``eot=k`` every step ascends
the loss averaged over k fresh noise draws (expectation over transformation, Athalye et al.
2018, arXiv 1802.00420, as Pinot et al. 2019 and Araujo et al. 2020 evaluate their defenses),
so its gradient is the mean of the k per-draw gradients (:func:`eot_gradient`), and an iterate
succeeds when the argmax of the mean softmax over the k draws is wrong. The noise is never
frozen: every forward draws anew.

Guarantee: every returned input lies inside the eps ball around its clean input (up to
floating-point rounding of the projection) and inside the data range ``clip``. PGD is a
heuristic: a failed attack proves nothing about robustness.
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
    check_norm,
    clamp_to,
    generator_for,
    input_gradient,
    input_gradients,
    l2_norms,
    margin,
    per_sample,
)
from lipcert.errors import BadInputError, check_labels

LOSSES = ("margin", "ce")
_TINY = 1e-12


@input_gradients
def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: float = 2,
    steps: int = 50,
    step_size: float | Tensor | None = None,
    restarts: int = 1,
    targeted: bool = False,
    seed: int | None = None,
    *,
    loss: str = "margin",
    clip: Bounds = DATA_RANGE,
    random_start: bool = True,
    eot: int = 1,
) -> Tensor:
    """Adversarial examples for ``x`` inside the ``norm`` ball of radius ``eps``.

    Args:
        model: maps a batch to logits (N, classes); put it in eval mode first (the attack never
            changes its mode and never touches its parameters' ``.grad``).
        x: clean inputs (N, ...), inside ``clip``.
        y: labels (N,); with ``targeted=True`` the target classes instead.
        eps: ball radius, a number or one per sample (N,).
        norm: 2 or ``float("inf")``.
        steps: gradient steps per restart.
        step_size: step length (number or per sample); default ``2.5 * eps / steps``.
        restarts: independent random starts; per sample the best one is kept.
        targeted: push towards class ``y`` instead of away from it.
        seed: seeds a ``torch.Generator`` on ``x``'s device for the random starts (None: the
            global RNG).
        loss: ``"margin"`` (``max_{j != y} z_j - z_y``, scale-free) or ``"ce"`` (cross-entropy).
        clip: data range ``(low, high)`` every iterate is clipped to; None for no box.
        random_start: start from a random point of the ball (see :func:`random_ball`), else
            from ``x``.
        eot: noise draws averaged at every step (expectation over transformation) for a
            randomized model; ``eot=1`` on a model with NoiseInjection warns
            (:class:`~lipcert.attacks.common.RandomizedModelWarning`).

    Returns:
        The adversarial batch. Over all restarts and iterates, each sample keeps the best
        point: one that succeeds (misclassified, or classified as the target), else the one
        with the highest loss. (The last iterate of a restart is evaluated only for samples
        without a success so far, which saves most of that extra forward pass.)

    Batched and per-sample calls agree when the model treats samples independently; the
    random starts are drawn for the whole batch from one generator, so compare them with
    ``random_start=False`` (or identical noise), not with the same seed on sub-batches.
    """
    check_batch(x, y, clip)
    p = check_norm(norm)
    if loss not in LOSSES:
        raise BadInputError(f"loss must be one of {LOSSES}, got {loss!r}.")
    if steps < 0 or restarts < 1:
        raise BadInputError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}.")
    if restarts > 1 and not random_start:
        raise BadInputError(
            "restarts > 1 need random_start=True; otherwise every restart repeats the same attack."
        )
    check_eot(model, eot, stacklevel=4)
    radius = per_sample(eps, x, "eps")
    if step_size is None:
        step = 2.5 * radius / max(steps, 1)
    else:
        step = per_sample(step_size, x, "step_size")
    generator = generator_for(x, seed)
    x = x.detach()
    if x.shape[0] == 0:
        return x.clone()

    best = _Best(x)
    for _ in range(restarts):
        start = random_ball(x, radius, p, generator) if random_start else torch.zeros_like(x)
        x_adv = clamp_to(x + start, clip)
        for _ in range(steps):
            grad, losses, success = eot_gradient(model, x_adv, y, loss, targeted, eot)
            best.update(x_adv, success, losses)
            x_adv = _step(x, x_adv, grad, radius, step, p, clip)
        # the last iterate matters only where no iterate has succeeded yet
        open_rows = (~best.success).nonzero().flatten()
        if len(open_rows):
            with torch.no_grad():
                losses, succeeded = _eot_evaluate(model, x_adv[open_rows], y[open_rows], loss,
                                                  targeted, eot)
            success = torch.zeros_like(best.success)
            success[open_rows] = succeeded
            all_losses = torch.full_like(best.loss, -math.inf)
            all_losses[open_rows] = losses
            best.update(x_adv, success, all_losses)
    return best.points


def eot_gradient(
    model: Model, x: Tensor, y: Tensor, loss: str = "margin", targeted: bool = False,
    eot: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(gradient, loss, success)`` of the attack objective at ``x``, averaged over ``eot``
    forward passes (fresh noise in each for a randomized model).

    The gradient is the mean of the per-draw input gradients (draws are differentiated one at
    a time, so memory does not grow with ``eot``), the loss the mean per-sample loss, and
    ``success`` whether the argmax of the per-draw softmax averaged over the draws is wrong
    (for ``eot=1``: of the single forward's logits).
    """
    grad = torch.zeros_like(x)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    probabilities = None
    for _ in range(eot):
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            logits = model(x_var)
            losses = _objective(logits, y, loss, targeted)
            grad = grad + input_gradient(losses, x_var)
        total = total + losses.detach()
        if eot == 1:
            return grad, total, _succeeded(logits.detach(), y, targeted)
        soft = logits.detach().softmax(dim=1)
        probabilities = soft if probabilities is None else probabilities + soft
    return grad / eot, total / eot, _succeeded(probabilities, y, targeted)


def _eot_evaluate(model: Model, x: Tensor, y: Tensor, loss: str, targeted: bool,
                  eot: int) -> tuple[Tensor, Tensor]:
    """(mean loss, success of the mean softmax) over ``eot`` forwards, without gradients."""
    if eot == 1:
        logits = model(x)
        return _objective(logits, y, loss, targeted), _succeeded(logits, y, targeted)
    total, probabilities = 0.0, 0.0
    for _ in range(eot):
        logits = model(x)
        total = total + _objective(logits, y, loss, targeted)
        probabilities = probabilities + logits.softmax(dim=1)
    return total / eot, _succeeded(probabilities, y, targeted)


class _Best:
    """Per sample, the best point seen: a successful one (the first found, or a later one
    with a higher loss), else the one with the highest loss."""

    def __init__(self, x: Tensor) -> None:
        self.points = x.clone()
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.loss = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)

    def update(self, points: Tensor, success: Tensor, loss: Tensor) -> None:
        same = success == self.success
        better = (success & ~self.success) | (same & (loss > self.loss))
        self.points = torch.where(as_column(better, points), points.detach(), self.points)
        self.loss = torch.where(better, loss, self.loss)
        self.success |= success


def _succeeded(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    predicted = logits.argmax(dim=1)
    return predicted == y if targeted else predicted != y


def _objective(logits: Tensor, y: Tensor, loss: str, targeted: bool) -> Tensor:
    """Per-sample loss the attack maximizes."""
    if loss == "margin":
        value = margin(logits, y)
    else:
        check_labels(y, logits.shape[0], logits.shape[1])
        value = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return -value if targeted else value


def _step(
    x: Tensor, x_adv: Tensor, grad: Tensor, radius: Tensor, step: Tensor, p: float, clip: Bounds
) -> Tensor:
    """One ascent step, then projection onto the ball around ``x`` and onto the data range."""
    if p == 2.0:
        direction = grad / as_column(l2_norms(grad).clamp_min(_TINY), grad)
    else:
        direction = grad.sign()
    delta = project(x_adv.detach() + as_column(step, x) * direction - x, radius, p)
    return clamp_to(x + delta, clip)


def project(delta: Tensor, radius: Tensor, norm: float) -> Tensor:
    """Nearest point of the ``norm`` ball of per-sample ``radius`` to ``delta`` (N, ...)."""
    if norm == 2.0:
        scale = (radius / l2_norms(delta).clamp_min(_TINY)).clamp(max=1.0)
        return delta * as_column(scale, delta)
    bound = as_column(radius, delta)
    return torch.maximum(torch.minimum(delta, bound), -bound)


def random_ball(
    x: Tensor, radius: Tensor, norm: float, generator: torch.Generator | None
) -> Tensor:
    """Random points of the ``norm`` balls of per-sample ``radius`` (shape of ``x``).

    l-infinity: uniform in the cube. l2: a uniform direction times a length uniform in
    [0, radius] -- not uniform in volume, which in d dimensions puts almost every start on the
    sphere, from where the projected steps need a long path to rotate towards the best point.
    """
    if norm == 2.0:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        direction = direction / as_column(l2_norms(direction).clamp_min(_TINY), x)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        return direction * as_column(radius * u, x)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (2 * u - 1) * as_column(radius, x)
