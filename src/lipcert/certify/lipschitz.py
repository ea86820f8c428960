"""Lipschitz-margin certificates (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034).

If every logit difference z_c - z_j is Lipschitz with constant K_j, the prediction c cannot
change within l2 distance min_j (z_c - z_j) / K_j of x. Two choices of K_j:

- global: K_j = sqrt(2) L with L a bound of the whole network (||e_c - e_j|| = sqrt 2);
- pairwise (LMT's refinement, the last-layer form used by SLL/LiResNet): for a final affine
  layer z = W h + b and a bound L' of h, K_j = L' ||w_c - w_j||.

Both are sound; the pairwise radius is reported as the larger of the two.

Floating point: bounds and logits computed in float32 carry rounding errors (a float32 Gram
bound can sit ~2e-7 below the float64 truth), so every radius is divided by
``1 + rounding_guard(dtype)`` (100 machine epsilons of the logits' dtype: 1.2e-5 in float32,
2.2e-14 in float64). Certify in float64 for the tightest sound radii.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcert.bounds import LipschitzReport, lipschitz_bound
from lipcert.errors import BadInputError, check_finite
from lipcert.linalg.result import NormBound

LAST_LAYER_FORMS = ("pairwise", "global")


def rounding_guard(dtype: torch.dtype) -> float:
    """Relative slack for float rounding in bounds and logits of ``dtype``: 100 epsilons."""
    return 100.0 * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _check_logits(logits: torch.Tensor, batch: int | None = None) -> None:
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise BadInputError(
            f"certificates need a batch of logits of shape (batch, classes >= 2), got {shape}."
        )
    if batch is not None and logits.shape[0] != batch:
        raise BadInputError(f"the model returned {logits.shape[0]} rows for {batch} inputs.")
    check_finite(logits, "the logits")


def _global_constant(bound: LipschitzReport | NormBound | float | torch.Tensor) -> float:
    if isinstance(bound, LipschitzReport):
        return float(bound)
    if isinstance(bound, NormBound):
        return float(bound.require_sound("the Lipschitz bound used for certification"))
    value = float(bound)
    if not math.isfinite(value) or value < 0:
        raise BadInputError(f"a Lipschitz bound must be finite and >= 0, got {value}.")
    return value


def _row_distances(weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """||w_c - w_j|| for each sample's class c (rows) and every class j (columns)."""
    weight = weight.detach().to(torch.float64)
    distances = torch.empty(len(classes), weight.shape[0], dtype=torch.float64,
                            device=weight.device)
    for c in classes.unique().tolist():
        distances[classes == c] = (weight - weight[c]).norm(dim=1)
    return distances


def margin_radii(logits: torch.Tensor, bound: LipschitzReport | NormBound | float | torch.Tensor,
                 y: torch.Tensor | None = None, last_layer: str = "pairwise") -> torch.Tensor:
    """Certified l2 radius of each row of ``logits`` (float64, shape (batch,)).

    Args:
        logits: (batch, classes) outputs of the model whose Lipschitz bound is ``bound``.
        bound: a :class:`LipschitzReport` of that model, or a sound bound of its whole
            Lipschitz constant (NormBound with guarantee exact/upper, or a number you vouch
            for; then only the global form is possible).
        y: true labels; rows predicted wrongly get radius 0. Without ``y`` the radius is
            that of the predicted class.
        last_layer: ``"pairwise"`` (the larger of the pairwise and global radii; the global
            one alone when the report has no final linear layer) or ``"global"``.
    """
    _check_logits(logits)
    if last_layer not in LAST_LAYER_FORMS:
        raise BadInputError(f"last_layer must be one of {LAST_LAYER_FORMS}, got {last_layer!r}.")
    z = logits.detach().to(torch.float64)
    predicted = z.argmax(dim=1)
    classes = predicted if y is None else y.to(device=z.device, dtype=torch.long)
    if classes.shape != predicted.shape:
        raise BadInputError(f"y has shape {tuple(y.shape)}, expected ({len(z)},).")
    if bool(((classes < 0) | (classes >= z.shape[1])).any()):
        raise BadInputError(f"labels must lie in [0, {z.shape[1]}).")
    margins = z.gather(1, classes[:, None]) - z  # z_c - z_j
    others = torch.ones_like(z, dtype=torch.bool).scatter_(1, classes[:, None], False)
    worst = margins.masked_fill(~others, math.inf).min(dim=1).values
    constant = _global_constant(bound)
    radii = worst / (math.sqrt(2.0) * constant) if constant > 0 else \
        torch.where(worst > 0, math.inf, 0.0).to(z)
    last = bound.last_linear if isinstance(bound, LipschitzReport) else None
    if last_layer == "pairwise" and last is not None:
        scale = float(last.input_bound.detach()) * _row_distances(last.weight, classes).to(z)
        pair = margins / scale
        pair = torch.where(margins > 0, pair.nan_to_num(nan=math.inf), 0.0)
        pairwise = pair.masked_fill(~others, math.inf).min(dim=1).values
        radii = torch.maximum(radii, pairwise)
    radii = radii.clamp_min(0.0) / (1.0 + rounding_guard(logits.dtype))
    if y is not None:
        radii = torch.where(predicted == classes, radii, torch.zeros_like(radii))
    return radii


def lipschitz_radii(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                    bound: LipschitzReport | NormBound | float | None = None,
                    last_layer: str = "pairwise") -> torch.Tensor:
    """Certified l2 radius of each prediction of ``model`` on ``x`` (shape (batch,)).

    No input within the radius (strictly) changes the predicted class. ``bound`` defaults to
    :func:`lipcert.bounds.lipschitz_bound` of ``model`` (pass a report to reuse it across
    batches). Global form: margin / (sqrt 2 L); pairwise form: min_j (z_c - z_j) /
    (L' ||w_c - w_j||) with the final linear layer W and the bound L' of the rest (Tsuzuku
    et al. 2018, arXiv 1802.04034). With ``y``, misclassified points get radius 0.

    Raises:
        BadInputError: NaN/Inf inputs, outputs that are not a batch of logits, bad labels.
        UnsupportedLayerError / UnsoundRequestError: from the bound (see lipschitz_bound).
    """
    check_finite(x, "x")
    if bound is None:
        bound = lipschitz_bound(model, x)
    with torch.no_grad():
        logits = model(x)
    _check_logits(logits, len(x))
    return margin_radii(logits, bound, y, last_layer)
