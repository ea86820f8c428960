"""Losses by name, for the CLI and :class:`lipcert.train.TrainConfig`."""

from __future__ import annotations

import math

from torch import nn

from lipcert.errors import BadInputError
from lipcert.losses.hinge import MultiMarginHinge
from lipcert.losses.hkr import HKRLoss
from lipcert.losses.lmt import LMTLoss
from lipcert.losses.margin import MarginCrossEntropy

LOSSES = {
    "ce": "plain cross-entropy",
    "margin-ce": "cross-entropy with offset and temperature (SLL, arXiv 2303.03169)",
    "lmt": "Lipschitz-margin training with the network bound (arXiv 1802.04034)",
    "lmt++": "LMT with per-pair bounds from the last linear layer (arXiv 1802.04034)",
    "hinge": "multi-class hinge on margins (CPL, arXiv 2110.12690)",
    "hkr": "hinge + Kantorovich-Rubinstein (deel-lip, arXiv 2006.06520)",
}


def build_loss(
    name: str,
    *,
    eps: float = 1.0,
    offset: float | None = None,
    temperature: float = 0.25,
    margin: float | None = None,
    alpha: float = 0.98,
    ramp_epochs: int = 0,
) -> nn.Module:
    """The loss called ``name`` (see :data:`LOSSES`), set up for the target l2 radius ``eps``.

    Margin-based losses derive their margin from ``eps`` unless given: a 1-Lipschitz network
    with margin ``m`` certifies radius ``m / sqrt(2)``, so ``offset`` (margin-ce) and
    ``margin`` (hinge, hkr) default to ``sqrt(2) * eps``. The loss records ``eps`` as
    ``loss.target_eps``, the radius :func:`lipcert.train.train` then reports by default.
    """
    if not eps >= 0:
        raise BadInputError(f"eps must be >= 0, got {eps}.")
    wanted_margin = math.sqrt(2.0) * eps
    if name == "ce":
        loss = nn.CrossEntropyLoss()
    elif name == "margin-ce":
        loss = MarginCrossEntropy(wanted_margin if offset is None else offset, temperature)
    elif name in ("lmt", "lmt++"):
        loss = LMTLoss(eps, pairwise=name == "lmt++", ramp_epochs=ramp_epochs)
    elif name == "hinge":
        loss = MultiMarginHinge(wanted_margin if margin is None else margin)
    elif name == "hkr":
        loss = HKRLoss(alpha, wanted_margin if margin is None else margin)
    else:
        raise BadInputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}.")
    loss.target_eps = float(eps)  # lipcert.train reports and certifies at this radius
    return loss
