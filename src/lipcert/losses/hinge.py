"""Multi-class hinge loss on logit margins: the loss of Convex Potential Layers.

Reference: Meunier, Delattre, Araujo, Allauzen, "A Dynamical System Perspective for
Lipschitz Neural Networks" (CPL, ICML 2022, arXiv 2110.12690).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError
from lipcert.losses.margin import check_logits_and_target


class MultiMarginHinge(nn.Module):
    """``mean_n sum_{j != y_n} max(0, margin - (z_{n,y} - z_{n,j})) / C``.

    The same quantity as ``torch.nn.MultiMarginLoss(margin=margin)`` (p = 1): zero exactly
    when every margin ``z_y - z_j`` is at least ``margin``, which for a 1-Lipschitz network
    certifies the l2 radius ``margin / sqrt(2)``.
    """

    def __init__(self, margin: float = 0.7) -> None:
        super().__init__()
        if margin < 0:
            raise BadInputError(f"margin must be >= 0, got {margin}.")
        self.margin = float(margin)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_and_target(logits, target)
        true_logit = logits.gather(1, target[:, None])
        violation = F.relu(self.margin - true_logit + logits)
        not_target = 1.0 - F.one_hot(target, logits.shape[1]).to(logits.dtype)
        return (violation * not_target).sum(dim=1).mean() / logits.shape[1]

    def extra_repr(self) -> str:
        return f"margin={self.margin:.4g}"
