"""Lipschitz-Margin Training (LMT) and its pairwise variant LMT++.

Reference: Tsuzuku, Sato, Sugiyama, "Lipschitz-Margin Training: Scalable Certification of
Perturbation Invariance for Deep Neural Networks" (NeurIPS 2018, arXiv 1802.04034).

If the logit map is L-Lipschitz in l2, every margin ``z_y - z_j`` is ``sqrt(2) L``-Lipschitz,
so a prediction whose margins all exceed ``sqrt(2) L eps`` is certified at radius ``eps``.
LMT trains for exactly that: it adds ``sqrt(2) eps L`` to every non-target logit (L a
differentiable upper bound from :mod:`lipcert.bounds`) and applies cross-entropy. LMT++
uses the sharper per-pair bound ``L' ||w_y - w_j||`` where ``W`` is the last linear layer and
``L'`` bounds everything before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.losses.margin import check_logits_and_target


def network_bound(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    """Differentiable, sound l2 Lipschitz upper bound of ``model`` (0-dim tensor)."""
    from lipcert.bounds import lipschitz_bound

    return lipschitz_bound(model, example_input).value


def pairwise_bounds(model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
    """(C, C) matrix K with ``K[i, j]`` an upper bound of the Lipschitz constant of ``z_i - z_j``.

    ``K[i, j] = L' ||w_i - w_j||`` where ``W`` is the model's last linear layer and ``L'`` a
    sound bound of the layers before it (LMT++, arXiv 1802.04034, section 4.2), both from
    :func:`lipcert.bounds.lipschitz_bound`. Differentiable in the weights.
    """
    from lipcert.bounds import lipschitz_bound

    last = lipschitz_bound(model, example_input).last_linear
    if last is None:
        raise UnsupportedLayerError(
            f"LMT++ needs a model that ends in a linear layer; {type(model).__name__}'s output "
            "node is not one. Use the global form LMTLoss(eps) (loss 'lmt') instead."
        )
    weight = last.weight.to(last.input_bound.dtype)
    gaps = (weight[:, None, :] - weight[None, :, :]).flatten(2)
    # sqrt of a clamped sum keeps the gradient finite on the zero diagonal.
    distances = gaps.square().sum(-1).clamp_min(1e-30).sqrt()
    distances = distances * (1 - torch.eye(len(weight), dtype=distances.dtype,
                                           device=distances.device))
    return last.input_bound * distances


EpsSchedule = float | Callable[[int], float]


class LMTLoss(nn.Module):
    """Cross-entropy after adding the Lipschitz margin ``sqrt(2) eps L`` to non-target logits.

    Args:
        eps: the l2 radius to train for, or a function ``epoch -> eps``.
        pairwise: use LMT++'s per-pair bound from the last linear layer.
        ramp_epochs: if > 0, scale eps linearly from ``eps / ramp_epochs`` at epoch 0 up to
            ``eps`` at epoch ``ramp_epochs - 1`` (LMT ramps its margin up over the first
            epochs). Ignored when ``eps`` is a function.

    ``forward(logits, target, bound)`` takes ``bound`` from :meth:`bound`: a 0-dim tensor
    (the network's bound L) or, with ``pairwise=True``, the (C, C) matrix of per-pair bounds.
    With ``eps = 0`` the loss is plain cross-entropy.
    """

    needs_bound = True

    def __init__(self, eps: EpsSchedule, pairwise: bool = False, ramp_epochs: int = 0) -> None:
        super().__init__()
        if ramp_epochs < 0:
            raise BadInputError(f"ramp_epochs must be >= 0, got {ramp_epochs}.")
        self.schedule = eps
        self.pairwise = bool(pairwise)
        self.ramp_epochs = int(ramp_epochs)
        self.eps = self.eps_at(0)

    def eps_at(self, epoch: int) -> float:
        """The radius the loss trains for during ``epoch`` (0-based)."""
        if callable(self.schedule):
            eps = float(self.schedule(epoch))
        elif self.ramp_epochs > 0:
            eps = float(self.schedule) * min(1.0, (epoch + 1) / self.ramp_epochs)
        else:
            eps = float(self.schedule)
        if not eps >= 0:
            raise BadInputError(f"LMT eps must be >= 0, got {eps} at epoch {epoch}.")
        return eps

    def set_epoch(self, epoch: int) -> None:
        """Move the eps schedule to ``epoch``; the trainer calls this at every epoch start."""
        self.eps = self.eps_at(epoch)

    def bound(self, model: nn.Module, example_input: torch.Tensor) -> torch.Tensor:
        """The differentiable bound ``forward`` needs, computed from ``model``."""
        if self.pairwise:
            return pairwise_bounds(model, example_input)
        return network_bound(model, example_input)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, bound: torch.Tensor
    ) -> torch.Tensor:
        check_logits_and_target(logits, target)
        classes = logits.shape[1]
        not_target = 1.0 - F.one_hot(target, classes).to(logits.dtype)
        bound = bound.to(logits.dtype)
        if bound.dim() == 0:
            shift = math.sqrt(2.0) * self.eps * bound * not_target
        elif bound.shape == (classes, classes):
            shift = self.eps * bound[target] * not_target
        else:
            raise BadInputError(
                f"bound must be a scalar or a ({classes}, {classes}) matrix, got shape "
                f"{tuple(bound.shape)}."
            )
        return F.cross_entropy(logits + shift, target)

    def extra_repr(self) -> str:
        return f"eps={self.eps:.4g}, pairwise={self.pairwise}, ramp_epochs={self.ramp_epochs}"
