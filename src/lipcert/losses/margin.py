"""Cross-entropy with a logit offset and a temperature: the loss of the 1-Lipschitz-layer papers.

Reference: Araujo, Havens, Delattre, Allauzen, Hu, "A Unified Algebraic Perspective on
Lipschitz Neural Networks" (SLL, ICLR 2023, arXiv 2303.03169), following Prach & Lampert
(AOL, arXiv 2208.03160).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError


def check_logits_and_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise :class:`BadInputError` unless ``logits`` is (N, C) and ``target`` N labels < C."""
    if logits.dim() != 2:
        raise BadInputError(f"logits must have shape (N, classes), got {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1]:
        raise BadInputError(
            f"target must hold one label per row of logits ({logits.shape[0]}), "
            f"got shape {tuple(target.shape)}."
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise BadInputError(
            f"labels must lie in [0, {logits.shape[1] - 1}] for {logits.shape[1]} logits; got "
            f"[{int(target.min())}, {int(target.max())}]. Does the model's number of classes "
            "match the data set?"
        )


class MarginCrossEntropy(nn.Module):
    """``T * cross_entropy((z - offset * onehot(y)) / T, y)``.

    Subtracting ``offset`` from the true logit asks for a margin of at least ``offset``
    before the loss saturates; for a 1-Lipschitz network a margin ``m`` certifies the l2
    radius ``m / sqrt(2)``, so the default ``offset = 1.5 * sqrt(2)`` aims at radius 1.5.
    The temperature ``T`` sharpens the soft-max; multiplying by ``T`` keeps gradient scales
    comparable across temperatures. Defaults follow the SLL paper (arXiv 2303.03169).
    """

    def __init__(self, offset: float = 1.5 * math.sqrt(2), temperature: float = 0.25) -> None:
        super().__init__()
        if offset < 0:
            raise BadInputError(f"offset must be >= 0, got {offset}.")
        if temperature <= 0:
            raise BadInputError(f"temperature must be > 0, got {temperature}.")
        self.offset = float(offset)
        self.temperature = float(temperature)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_and_target(logits, target)
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        shifted = (logits - self.offset * onehot) / self.temperature
        return self.temperature * F.cross_entropy(shifted, target)

    def extra_repr(self) -> str:
        return f"offset={self.offset:.4g}, temperature={self.temperature:.4g}"
