"""The fast gradient sign method (FGSM) and its l2 form (FGM).

Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial Examples"
(arXiv 1412.6572): one step of length ``eps`` from the clean input along the sign of the loss
gradient (l-infinity), or along the normalized gradient (l2, the "fast gradient method" of
Miyato et al., arXiv 1605.07725). It is exactly one PGD step with step size ``eps`` and no
random start, so it runs through :func:`lipcert.attacks.pgd` (same checks, same per-sample
best-point bookkeeping: the clean input is kept where the step does not succeed).

FGSM is the weakest attack lipcert ships: cheap, useful as a sanity check and as the inner
step of fast adversarial training, never as evidence of robustness (gradient masking defeats
it; use PGD or AutoAttack for that).
"""

from __future__ import annotations

from torch import Tensor

from lipcert.attacks.common import DATA_RANGE, Bounds, Model
from lipcert.attacks.pgd import pgd


def fgsm(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: float = float("inf"),
    targeted: bool = False,
    *,
    loss: str = "ce",
    clip: Bounds = DATA_RANGE,
    eot: int = 1,
) -> Tensor:
    """One signed (l-infinity) or normalized (l2) gradient step of length ``eps`` from ``x``.

    Args:
        model: maps a batch to logits; put it in eval mode first (its mode is never changed).
        x: clean inputs (N, ...) inside ``clip``; y: labels (N,) (target classes when
            ``targeted``).
        eps: step length = ball radius, a number or one per sample (N,).
        norm: ``float("inf")`` (FGSM, the default) or 2 (FGM).
        loss: ``"ce"`` (cross-entropy, as in the paper) or ``"margin"``.
        clip: data range the result is clipped to; None for no box.
        eot: noise draws averaged for the gradient of a randomized model.

    Returns:
        Per sample the better of the clean input and the stepped point (a misclassified one,
        else the one with the higher loss); every point lies in the ``eps`` ball around ``x``
        and inside ``clip``.
    """
    return pgd(model, x, y, eps, norm=norm, steps=1, step_size=eps, targeted=targeted,
               loss=loss, clip=clip, random_start=False, eot=eot)

