"""Margin losses for certified training.

- :class:`LMTLoss`: Lipschitz-margin training, LMT and LMT++ (arXiv 1802.04034).
- :class:`MarginCrossEntropy`: cross-entropy with offset and temperature (SLL, arXiv 2303.03169).
- :class:`MultiMarginHinge`: multi-class hinge (CPL, arXiv 2110.12690).
- :class:`HKRLoss`: hinge + Kantorovich-Rubinstein (deel-lip, arXiv 2006.06520).
- :func:`lipschitz_penalty`: a differentiable Lipschitz upper bound to add as a regularizer
  (Gram iteration, arXiv 2305.16173; Toeplitz bound, arXiv 2006.08391).

Every loss is called as ``loss(logits, target)``. A loss that needs the model's Lipschitz
bound sets ``needs_bound = True``, provides ``bound(model, example_input)`` and is called as
``loss(logits, target, bound)``; a loss with a schedule provides ``set_epoch(epoch)``.
:func:`lipcert.train.train` follows this protocol.
"""

from lipcert.losses.hinge import MultiMarginHinge
from lipcert.losses.hkr import HKRLoss
from lipcert.losses.lmt import LMTLoss
from lipcert.losses.margin import MarginCrossEntropy
from lipcert.losses.penalty import lipschitz_penalty
from lipcert.losses.registry import LOSSES, build_loss

__all__ = [
    "LMTLoss",
    "MarginCrossEntropy",
    "MultiMarginHinge",
    "HKRLoss",
    "lipschitz_penalty",
    "LOSSES",
    "build_loss",
]
