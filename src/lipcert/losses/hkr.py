"""Hinge + Kantorovich-Rubinstein loss of deel-lip, for 1-Lipschitz classifiers.

Reference: Serrurier, Mamalet, Gonzalez-Sanz, Boissin, Loubes, del Barrio, "Achieving
robustness in classification using optimal transport with hinge regularization"
(CVPR 2021, arXiv 2006.06520). Multi-class form: one-vs-rest per class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError
from lipcert.losses.margin import check_logits_and_target


def kantorovich_rubinstein(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over classes k of ``E[z_k | y = k] - E[z_k | y != k]`` on the batch.

    For a 1-Lipschitz ``z_k`` this estimates (from below) the Wasserstein-1 distance between
    class k and the rest. Classes absent from the batch (on either side) are left out.
    """
    positive = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    negative = 1.0 - positive
    pos_count, neg_count = positive.sum(0), negative.sum(0)
    present = (pos_count > 0) & (neg_count > 0)
    pos_mean = (logits * positive).sum(0) / pos_count.clamp_min(1)
    neg_mean = (logits * negative).sum(0) / neg_count.clamp_min(1)
    gap = (pos_mean - neg_mean)[present]
    return gap.mean() if gap.numel() else logits.sum() * 0.0


def one_vs_rest_hinge(logits: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``max(0, margin / 2 - s_k z_k)`` with ``s_k = +1`` for the true class, -1 otherwise.

    The true class's term is weighted by ``C - 1`` so both sides count equally.
    """
    classes = logits.shape[1]
    positive = F.one_hot(target, classes).to(logits.dtype)
    sign = 2.0 * positive - 1.0
    hinge = F.relu(margin / 2.0 - sign * logits)
    weight = positive * (classes - 2.0) + 1.0
    return (hinge * weight).mean()


class HKRLoss(nn.Module):
    """``alpha * hinge(margin) - (1 - alpha) * KR``, with ``alpha`` in [0, 1].

    ``alpha = 1`` is the pure one-vs-rest hinge (margin ``margin`` between classes),
    ``alpha = 0`` the pure Kantorovich-Rubinstein term. deel-lip's convention.
    """

    def __init__(self, alpha: float = 0.98, margin: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise BadInputError(f"alpha must lie in [0, 1], got {alpha}.")
        if margin < 0:
            raise BadInputError(f"margin must be >= 0, got {margin}.")
        self.alpha = float(alpha)
        self.margin = float(margin)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_and_target(logits, target)
        hinge = one_vs_rest_hinge(logits, target, self.margin)
        return self.alpha * hinge - (1.0 - self.alpha) * kantorovich_rubinstein(logits, target)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}, margin={self.margin:.4g}"
