"""The result of a network Lipschitz bound: the value, its guarantee and the per-node steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lipcert.report import format_table


@dataclass(frozen=True)
class LayerBound:
    """One step of the combination over the graph.

    Attributes:
        name: the graph node (module path for modules, function name otherwise).
        kind: module class or function name.
        bound: the Lipschitz bound of this step alone (for ``+``/``cat``, the combined value).
        guarantee: ``"exact"`` or ``"upper"`` for this step alone.
        method: how ``bound`` was obtained.
        running: bound from the model input to this node's output (product along the path,
            sums at residual additions, root of sum of squares at concatenations).
    """

    name: str
    kind: str
    bound: float
    guarantee: str
    method: str
    running: float


@dataclass(frozen=True)
class LastLinear:
    """The model's final affine map ``z = W h + b`` and the bound of everything before it.

    Used by the pairwise (LMT / SLL last-layer) certificate: ``input_bound`` is an upper
    bound of the Lipschitz constant of ``h`` as a function of the model input.
    """

    name: str
    weight: torch.Tensor
    input_bound: torch.Tensor


@dataclass
class LipschitzReport:
    """An l2 Lipschitz bound of a whole network, from :func:`lipcert.bounds.lipschitz_bound`.

    Attributes:
        value: 0-dim float64 tensor, an upper bound of the l2 Lipschitz constant of the map
            from one input sample to its output; differentiable w.r.t. the weights.
        guarantee: ``"exact"`` (only when the network is a single linear map with an exact
            norm, up to reshapes) or ``"upper"``; never ``"estimate"``.
        layers: the per-node steps, in graph order.
        traced: False when torch.fx could not trace the model and its children were bounded
            in registration order instead (checked against the model's output on the
            example input).
        last_linear: the final affine layer, when the output node is one (else None).
    """

    value: torch.Tensor
    guarantee: str
    layers: list[LayerBound] = field(default_factory=list)
    traced: bool = True
    last_linear: LastLinear | None = None

    def __float__(self) -> float:
        return float(self.value.detach())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (floats and strings)."""
        return {
            "upper_bound": float(self),
            "guarantee": self.guarantee,
            "traced": self.traced,
            "layers": [vars(layer) for layer in self.layers],
        }

    def table(self) -> str:
        """The per-node steps as a text table."""
        rows = [[s.name, s.kind, s.bound, s.guarantee, s.method, s.running] for s in self.layers]
        return format_table(rows, ["node", "type", "bound", "guarantee", "method", "running"])

    def __str__(self) -> str:
        how = "traced with torch.fx" if self.traced else "children in order (fx tracing failed)"
        return (f"{self.table()}\n\nLipschitz upper bound: {float(self):.6g} "
                f"(guarantee: {self.guarantee}; {how})")
