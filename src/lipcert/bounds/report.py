"""The result of a network Lipschitz bound: the value, its guarantee and the per-node steps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lipcert.errors import BadInputError, UnsoundRequestError
from lipcert.report import format_table

SOUND_REPORT_GUARANTEES = ("exact", "upper")


def model_fingerprint(model: torch.nn.Module) -> tuple:
    """Which parameters ``model`` holds and their values: per parameter its memory, shape,
    version counter and float64 sum and sum of squares (``p.data`` writes skip the counter,
    not the sums)."""
    parameters = list(model.parameters())
    if not parameters:
        return ()
    with torch.no_grad():
        sums = [torch.stack([t.sum(), t.square().sum()]).cpu() for t in (
            p.detach().to(torch.float32 if p.device.type == "mps" else torch.float64)
            for p in parameters)]
        values = torch.stack(sums).tolist()  # one transfer per parameter, no float() each
    return tuple((p.data_ptr(), tuple(p.shape), p._version, *v)
                 for p, v in zip(parameters, values, strict=True))


def _check_bound_value(value: Any, what: str) -> float:
    """``float(value)`` if it is a finite number >= 0, else a one-line BadInputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise BadInputError(f"{what} must be a number, got {type(value).__name__}.")
    if torch.is_tensor(value) and value.numel() != 1:
        raise BadInputError(f"{what} must hold one number, got shape {tuple(value.shape)}.")
    number = float(value.detach()) if torch.is_tensor(value) else float(value)
    if not math.isfinite(number) or number < 0:
        raise BadInputError(
            f"{what} is {number}; a Lipschitz bound is a finite number >= 0 (a rule or a "
            "hand-built report produced it: fix that rule or recompute with lipschitz_bound)."
        )
    return number


@dataclass(frozen=True)
class LayerBound:
    """One step of the combination over the graph.

    Attributes:
        name: the graph node (module path for modules, function name otherwise).
        kind: module class or function name.
        bound: the Lipschitz bound of this step alone; for a node joining several operands
            (``+``, ``cat``), the running bound here over the running bound at the nearest
            node all operands depend on (the fork of a residual block: ``x + f(x)`` reads
            ``1 + ||f||``), which ``method`` names.
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

    def check(self, classes: int | None = None) -> None:
        """Raise BadInputError unless this is a usable final layer (finite (C, d) weight with
        ``classes`` rows, finite ``input_bound`` >= 0)."""
        where = f"the last linear layer {self.name!r} of the report"
        if not torch.is_tensor(self.weight) or self.weight.dim() != 2:
            raise BadInputError(f"{where} needs a 2-D weight (classes, features).")
        if not self.weight.is_floating_point() or not bool(torch.isfinite(self.weight).all()):
            raise BadInputError(f"{where} has a weight with NaN/Inf or non-float values.")
        if classes is not None and self.weight.shape[0] != classes:
            raise BadInputError(
                f"{where} has {self.weight.shape[0]} rows but the logits have {classes} "
                "classes: the report is not for this model."
            )
        _check_bound_value(self.input_bound, f"the input bound of {where}")


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
        last_linear: the final affine layer, when the logits ARE its output (nothing runs on
            them afterwards, in place or not); else None.
        input_shape: the per-sample input shape (without the batch dimension) the bound holds
            for; a convolution's norm depends on it, so certificates refuse other shapes.
            None only in hand-built reports (certificates then refuse the report).
        caveats: what the bound could not check, one sentence each (e.g. the untraceable-model
            fallback: which batch sizes and input scales it checked, and that a forward
            branching elsewhere is not excluded); empty for a fully traced model.

    Construction checks the value (finite, >= 0), the guarantee (``exact``/``upper``) and
    every step's bound, so a faulty rule or a hand-made report cannot produce a certificate.
    """

    value: torch.Tensor
    guarantee: str
    layers: list[LayerBound] = field(default_factory=list)
    traced: bool = True
    last_linear: LastLinear | None = None
    input_shape: tuple[int, ...] | None = None
    caveats: tuple[str, ...] = ()
    model_state: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.check()

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise BadInputError unless ``model`` holds the very parameters, with the same
        values, that the bound was computed for (``model_state``, set by lipschitz_bound;
        hand-built reports have none and are not checked)."""
        if self.model_state is None:
            return
        if model_fingerprint(model) != self.model_state:
            raise BadInputError(
                "the Lipschitz report was computed for another model or for other weights "
                "(parameters changed since, e.g. by training); recompute it with "
                "lipcert.bounds.lipschitz_bound(model, example_input)."
            )

    def check(self) -> None:
        """Raise a lipcert error unless the report can back a certificate (run again by the
        certificates: the dataclass is mutable)."""
        if self.guarantee not in SOUND_REPORT_GUARANTEES:
            raise UnsoundRequestError(
                f"a LipschitzReport with guarantee {self.guarantee!r} cannot back a certificate; "
                f"only {SOUND_REPORT_GUARANTEES} can (compute it with lipschitz_bound)."
            )
        if not torch.is_tensor(self.value):
            raise BadInputError(
                f"LipschitzReport.value must be a 0-dim tensor, got {type(self.value).__name__}."
            )
        _check_bound_value(self.value, "the report's Lipschitz bound")
        for step in self.layers:
            _check_bound_value(step.bound, f"the bound of step {step.name!r} in the report")
            _check_bound_value(step.running, f"the running bound at {step.name!r} in the report")
        if self.last_linear is not None:
            self.last_linear.check()
        if self.input_shape is not None:
            shape = self.input_shape
            if not isinstance(shape, tuple) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise BadInputError(
                    f"LipschitzReport.input_shape must be a tuple of sizes, got {shape!r}."
                )

    def check_input_shape(self, shape: tuple[int, ...] | torch.Size) -> None:
        """Raise BadInputError unless ``shape`` (one sample's shape) is the one the bound
        holds for."""
        if self.input_shape is None:
            raise BadInputError(
                "this LipschitzReport does not record the input shape it holds for; compute it "
                "with lipcert.bounds.lipschitz_bound(model, example_input)."
            )
        if tuple(shape) != tuple(self.input_shape):
            raise BadInputError(
                f"the Lipschitz report holds for inputs of shape {tuple(self.input_shape)} per "
                f"sample, got {tuple(shape)}; a bound depends on the input size, so recompute "
                "it with lipschitz_bound on an input of this shape."
            )

    def __float__(self) -> float:
        return float(self.value.detach())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (floats and strings)."""
        return {
            "upper_bound": float(self),
            "guarantee": self.guarantee,
            "traced": self.traced,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "caveats": list(self.caveats),
            "layers": [vars(layer) for layer in self.layers],
        }

    def table(self) -> str:
        """The per-node steps as a text table."""
        rows = [[s.name, s.kind, s.bound, s.guarantee, s.method, s.running] for s in self.layers]
        return format_table(rows, ["node", "type", "bound", "guarantee", "method", "running"])

    def __str__(self) -> str:
        how = "traced with torch.fx" if self.traced else "children in order (fx tracing failed)"
        notes = "".join(f"\ncaveat: {c}" for c in self.caveats)
        return (f"{self.table()}\n\nLipschitz upper bound: {float(self):.6g} "
                f"(guarantee: {self.guarantee}; {how}){notes}")
