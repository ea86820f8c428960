"""Lipschitz-margin certificates (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034).

If every logit difference z_c - z_j of the real-arithmetic network is Lipschitz with
constant K_j, the prediction c cannot change within l2 distance min_j (z_c - z_j) / K_j of
x. Two choices of K_j:

- global: K_j = sqrt(2) L with L a bound of the whole network (||e_c - e_j|| = sqrt 2);
- pairwise (LMT's refinement, the last-layer form used by SLL/LiResNet): for a final affine
  layer z = W h + b whose output ARE the logits and a bound L' of h, K_j = L' ||w_c - w_j||.

Both are sound; the pairwise radius is reported as the larger of the two.

Which model the radius is for: the model as the user runs it, in its own dtype. Its logits
``ẑ`` differ from the real network ``z`` by rounding: ``||ẑ(x') - z(x')||_2 <= offset +
slope ||x' - x||`` (:mod:`lipcert.certify.rounding`). The margins are read from a float64
copy of the model (default; its own error ``reference`` is tiny), so at ``x'`` within
``r`` of ``x``:

    ẑ_c(x') - ẑ_j(x') >= m_j - K_j r - sqrt2 (reference + offset + slope r),

with ``m_j`` the float64 margin. The radius ``r_j = (m_j - a0) / (K_j + a1)`` (``a0 = sqrt2
(reference + offset)``, ``a1 = sqrt2 slope``) makes the right side > 0 for every ``x'`` with
``||x' - x|| < r_j``: the model's own logit c then beats every other one strictly, so the
argmax is c whatever the tie rule (float32 argmax picks the lower index on ties; a tie gets
radius 0). The Lipschitz constants are also inflated by a relative ``rounding_guard`` (100
machine epsilons of the model's dtype) for the rounding of the bound's own computation.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from lipcert.bounds import LipschitzReport, lipschitz_bound
from lipcert.certify.rounding import (
    DtypeWatch,
    RoundingAllowance,
    forward_with_allowance,
    unit_roundoff,
)
from lipcert.errors import BadInputError, UnsupportedLayerError, check_finite, check_labels
from lipcert.linalg.result import NormBound

LAST_LAYER_FORMS = ("pairwise", "global")
REFERENCES = ("float64", "model")
LOGIT_ESTIMATE_ULPS = 64.0  # margin_radii without a model: allowance in units of u * ||z||


def rounding_guard(dtype: torch.dtype) -> float:
    """Relative slack for the rounding of a bound computed in ``dtype``: 100 epsilons."""
    return 100.0 * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _check_logits(logits, batch: int | None = None, what: str = "the logits") -> None:
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise BadInputError(
            f"certificates need a batch of logits of shape (batch, classes >= 2), got {shape}."
        )
    if not logits.is_floating_point():
        raise BadInputError(f"{what} must be floating-point, got {logits.dtype}.")
    if logits.shape[0] == 0:
        raise BadInputError(f"{what} hold no samples (empty batch); pass at least one.")
    if batch is not None and logits.shape[0] != batch:
        raise BadInputError(f"the model returned {logits.shape[0]} rows for {batch} inputs.")
    check_finite(logits, what)


def _global_constant(bound) -> float:
    if isinstance(bound, LipschitzReport):
        bound.check()
        return float(bound)
    if isinstance(bound, NormBound):
        bound.require_sound("the Lipschitz bound used for certification")
        value = bound.value
    else:
        value = bound
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise BadInputError(
            f"bound must be a LipschitzReport, a NormBound or a number, got "
            f"{type(value).__name__}."
        )
    if torch.is_tensor(value) and value.numel() != 1:
        raise BadInputError(f"a Lipschitz bound is one number, got shape {tuple(value.shape)}.")
    number = float(value.detach()) if torch.is_tensor(value) else float(value)
    if not math.isfinite(number) or number < 0:
        raise BadInputError(f"a Lipschitz bound must be finite and >= 0, got {number}.")
    return number


def _row_distances(weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """||w_c - w_j|| for each sample's class c (rows) and every class j (columns)."""
    weight = weight.detach().to(device=classes.device, dtype=torch.float64)
    distances = torch.empty(len(classes), weight.shape[0], dtype=torch.float64,
                            device=weight.device)
    for c in classes.unique().tolist():
        distances[classes == c] = (weight - weight[c]).norm(dim=1)
    return distances


def _ratio(margins: torch.Tensor, a0: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(margins - a0) / scale, 0 where the margin does not beat the allowance, inf where it
    does and scale is 0."""
    room = margins - a0
    radius = torch.where(scale > 0, room / scale.clamp_min(1e-300),
                         torch.full_like(room, math.inf))
    return torch.where(room > 0, radius, torch.zeros_like(radius))


def _radii(z: torch.Tensor, predicted: torch.Tensor, bound, y: torch.Tensor | None,
           last_layer: str, allowance: RoundingAllowance) -> torch.Tensor:
    constant = _global_constant(bound) * (1.0 + rounding_guard(allowance.dtype))
    classes = predicted if y is None else y
    margins = z.gather(1, classes[:, None]) - z  # z_c - z_j
    others = torch.ones_like(z, dtype=torch.bool).scatter_(1, classes[:, None], False)
    a0, a1 = (t.to(z)[:, None] for t in allowance.margin_terms())
    per_pair = _ratio(margins, a0, math.sqrt(2.0) * constant + a1)
    radii = per_pair.masked_fill(~others, math.inf).min(dim=1).values
    last = bound.last_linear if isinstance(bound, LipschitzReport) else None
    if last_layer == "pairwise" and last is not None:
        last.check(z.shape[1])
        inner = float(last.input_bound.detach()) * (1.0 + rounding_guard(allowance.dtype))
        scale = inner * _row_distances(last.weight, classes).to(z) + a1
        pairwise = _ratio(margins, a0, scale).masked_fill(~others, math.inf).min(dim=1).values
        radii = torch.maximum(radii, pairwise)
    if y is not None:
        radii = torch.where(predicted == y, radii, torch.zeros_like(radii))
    return radii


def _logit_allowance(logits: torch.Tensor, bound) -> RoundingAllowance:
    """Estimate from the logits alone: LOGIT_ESTIMATE_ULPS u (||z|| + L r) per sample."""
    u = unit_roundoff(logits.dtype, logits.device, matmul=True)
    size = logits.detach().to(torch.float64).norm(dim=1)
    lipschitz = _global_constant(bound)
    offset = LOGIT_ESTIMATE_ULPS * u * size
    slope = torch.full_like(offset, LOGIT_ESTIMATE_ULPS * u * lipschitz)
    return RoundingAllowance(offset, slope, offset.clone(), False, logits.dtype)


def _check_last_layer(last_layer: str) -> None:
    if last_layer not in LAST_LAYER_FORMS:
        raise BadInputError(f"last_layer must be one of {LAST_LAYER_FORMS}, got {last_layer!r}.")


def margin_radii(logits: torch.Tensor, bound: LipschitzReport | NormBound | float | torch.Tensor,
                 y: torch.Tensor | None = None, last_layer: str = "pairwise", *,
                 allowance: RoundingAllowance | None = None,
                 input_shape: tuple[int, ...] | torch.Size | None = None) -> torch.Tensor:
    """Certified l2 radius of each row of ``logits`` (float64, shape (batch,)).

    Prefer :func:`lipschitz_radii`, which sees the model and so can bound its rounding; from
    logits alone the rounding allowance (``allowance=None``) is an ESTIMATE: 64 unit
    roundoffs of the logits' dtype times ``||z|| + L r`` (it covers large offsets and biases,
    not cancellation inside the network).

    Args:
        logits: (batch, classes) outputs of the model whose Lipschitz bound is ``bound``.
        bound: a :class:`LipschitzReport` of that model, or a sound bound of its whole
            Lipschitz constant (NormBound with guarantee exact/upper, or a number you vouch
            for; then only the global form is possible).
        y: integer labels; rows predicted wrongly get radius 0. Without ``y`` the radius is
            that of the predicted class.
        last_layer: ``"pairwise"`` (the larger of the pairwise and global radii; the global
            one alone when the report has no final linear layer) or ``"global"``.
        allowance: the rounding bound of these logits (from
            :func:`lipcert.certify.rounding.forward_with_allowance`).
        input_shape: the per-sample shape of the inputs, checked against the report's.

    Raises:
        BadInputError: malformed logits/labels/bound, a report for another input shape.
        UnsoundRequestError: an ``estimate`` bound or report.
    """
    _check_logits(logits)
    _check_last_layer(last_layer)
    if isinstance(bound, LipschitzReport) and input_shape is not None:
        bound.check_input_shape(tuple(input_shape))
    z = logits.detach().to(torch.float64)
    labels = check_labels(y, len(z), z.shape[1], z.device)
    if allowance is None:
        allowance = _logit_allowance(logits, bound)
    return _radii(z, z.argmax(dim=1), bound, labels, last_layer, allowance)


def _model_dtype(model: nn.Module, x: torch.Tensor) -> torch.dtype:
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return x.dtype


def _float64_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Logits of a float64 copy of ``model`` (float32 weights are exact in float64), or None
    when the model cannot be copied, converted or run in float64."""
    watch = DtypeWatch(torch.float64)
    try:
        twin = copy.deepcopy(model).to(torch.float64)
        with torch.no_grad(), watch:
            logits = twin(x.to(torch.float64))
    except Exception:  # noqa: BLE001 (then the margins come from the model's own logits)
        return None
    if watch.least != torch.float64:  # the forward casts down inside: not a float64 run
        return None
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        return None
    _check_logits(logits, len(x), "the float64 copy's logits")
    return logits.detach().to(torch.float64)


def _check_mode(model: nn.Module) -> None:
    for path, module in model.named_modules():
        if module.training and isinstance(module, (nn.modules.batchnorm._BatchNorm,
                                                   nn.modules.dropout._DropoutNd)):
            raise UnsupportedLayerError(
                f"{type(module).__name__} {path or type(model).__name__!r} is in training mode "
                "(its output is random or depends on the batch); call model.eval() before "
                "certifying."
            )


def _recipe_spec(model: nn.Module) -> dict | None:
    """The ``lipcert_spec`` of a recipe model, also behind input-normalization layers."""
    from lipcert.bounds import Normalize

    spec = getattr(model, "lipcert_spec", None)
    if spec is None and isinstance(model, nn.Sequential) and len(model) > 1 and all(
            isinstance(m, Normalize) for m in list(model)[:-1]):
        spec = getattr(model[-1], "lipcert_spec", None)
    return spec if isinstance(spec, dict) else None


def check_recipe_input(model: nn.Module, x: torch.Tensor) -> None:
    """For a recipe model (:func:`lipcert.models.build`), refuse inputs it was not built for:
    another image shape (e.g. 3 channels into a 1-channel recipe, which a channel-padding first
    layer would silently accept) or values outside [0, 1], the range of every lipcert data set
    (images in [0, 255] got radii like 606). A certificate there is true of the function but
    not about the task the model was trained for."""
    spec = _recipe_spec(model)
    args = (spec or {}).get("args") or {}
    if "in_channels" not in args or "image_size" not in args:
        return
    expected = (args["in_channels"], args["image_size"], args["image_size"])
    if tuple(x.shape[1:]) != expected:
        raise BadInputError(
            f"recipe {spec.get('recipe')!r} was built for images of shape "
            f"{'x'.join(map(str, expected))}, got {'x'.join(map(str, x.shape[1:]))}; pass "
            "images of that shape.")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise BadInputError(
            f"x has values in [{float(x.min()):.4g}, {float(x.max()):.4g}], but recipe "
            f"{spec.get('recipe')!r} takes images in [0, 1] (divide 8-bit images by 255; "
            "normalization belongs inside the model, lipcert.bounds.Normalize).")


def lipschitz_radii(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                    bound: LipschitzReport | NormBound | float | None = None,
                    last_layer: str = "pairwise", *, reference: str = "float64") -> torch.Tensor:
    """Certified l2 radius of each prediction of ``model`` on ``x`` (float64, shape (batch,)).

    No input within the radius (strictly) changes the class ``model`` predicts as it runs,
    in its own dtype (float rounding included: module docstring). ``bound`` defaults to
    :func:`lipcert.bounds.lipschitz_bound` of ``model`` (pass a report to reuse it across
    batches; it must be for inputs of ``x``'s shape). Global form: margin / (sqrt 2 L);
    pairwise form: min_j (z_c - z_j) / (L' ||w_c - w_j||) with the final linear layer W and
    the bound L' of the rest (Tsuzuku et al. 2018, arXiv 1802.04034). With ``y``,
    misclassified points get radius 0.

    Args:
        reference: ``"float64"`` (default) reads the margins from a float64 copy of the model,
            which halves the rounding allowance of a float32 model; ``"model"`` reads them
            from the model's own logits.

    Raises:
        BadInputError: NaN/Inf/empty inputs, outputs that are not a batch of logits, bad
            labels, a report for another input shape.
        UnsupportedLayerError / UnsoundRequestError: from the bound (see lipschitz_bound), or
            batch norm / dropout in training mode.
    """
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 1:
        raise BadInputError("x must be a floating-point tensor of shape (batch, ...).")
    if x.shape[0] == 0:
        raise BadInputError("x holds no samples (empty batch); pass at least one.")
    check_finite(x, "x")
    _check_last_layer(last_layer)
    if reference not in REFERENCES:
        raise BadInputError(f"reference must be one of {REFERENCES}, got {reference!r}.")
    _check_mode(model)
    check_recipe_input(model, x)
    dtype = _model_dtype(model, x)
    if x.dtype != dtype:
        raise BadInputError(
            f"x is {x.dtype} but the model computes in {dtype}; pass x.to({dtype}) (the "
            "certificate is for the model as it runs)."
        )
    if bound is None:
        bound = lipschitz_bound(model, x)
    if isinstance(bound, LipschitzReport):
        bound.check()
        bound.check_input_shape(tuple(x.shape[1:]))
        bound.check_model(model)
    lipschitz = _global_constant(bound)
    reference_logits = None
    if reference == "float64" and dtype != torch.float64:
        reference_logits = _float64_logits(model, x)
    report = bound if isinstance(bound, LipschitzReport) else None
    logits, allowance = forward_with_allowance(
        model, x, lipschitz, report, None if reference_logits is None else torch.float64)
    _check_logits(logits, len(x))
    z = logits.detach().to(torch.float64)
    if reference_logits is not None:
        if reference_logits.shape != logits.shape:
            raise BadInputError(
                f"the float64 copy of the model returns shape {tuple(reference_logits.shape)}, "
                f"the model {tuple(logits.shape)}; certify with reference='model'."
            )
        z = reference_logits
    labels = check_labels(y, len(z), z.shape[1], z.device)
    return _radii(z, logits.argmax(dim=1), bound, labels, last_layer, allowance)
