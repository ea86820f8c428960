"""``NormalizedLinear``: a last layer with unit-norm rows (as in the SLL and CPL models).

Unit rows make every logit 1-Lipschitz, but the layer as a whole is NOT 1-Lipschitz: its
spectral norm lies between 1 and ``sqrt(out_features)``. ``lipschitz_bound`` therefore reports
the true spectral norm of the effective weight, and certification should use the pairwise
last-layer form ``margin_ij / (L' ||w_i - w_j||)`` with :meth:`NormalizedLinear.linear_weight`
(Tsuzuku et al. 2018, arXiv 1802.04034; SLL, arXiv 2303.03169).
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.layers._schur import safe_reciprocal
from lipcert.layers.parametrized import ParametrizedLinear

__all__ = ["NormalizedLinear"]


class _UnitRows(nn.Module):
    """Parametrization ``W -> diag(1 / ||w_i||) W`` (an all-zero row stays zero)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * safe_reciprocal(torch.linalg.vector_norm(weight, dim=1))[:, None]


class NormalizedLinear(ParametrizedLinear):
    """``nn.Linear`` whose weight rows have unit Euclidean norm. Arguments as ``nn.Linear``.

    ``lipschitz_bound`` is the exact spectral norm of the normalized weight (at most
    ``sqrt(out_features)``), not 1.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         parametrization=_UnitRows())

    def linear_weight(self) -> torch.Tensor:
        """The effective ``(out, in)`` matrix: ``forward(x) = x @ linear_weight().T + bias``."""
        return self.weight
