"""Checks and small tensor helpers shared by the attacks.

Every attack works on a batch ``x`` of shape (N, ...) and treats its samples independently:
the model must not mix samples (eval mode, no batch statistics), which is the caller's job.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from lipcert.errors import BadInputError, check_finite, check_labels

Model = Callable[[Tensor], Tensor]
Bounds = tuple[float, float] | None
"""Data range ``(low, high)`` the adversarial inputs are clipped to; ``None`` for no box."""

DATA_RANGE: Bounds = (0.0, 1.0)


def check_batch(x: Tensor, y: Tensor | None = None, clip: Bounds = None) -> None:
    """Raise :class:`BadInputError` unless ``x`` is a finite float batch (N, ...) inside ``clip``
    and ``y`` (when given) holds N integer labels on the same device."""
    check_finite(x, "the input batch x")
    if x.dim() < 2 or not x.is_floating_point():
        raise BadInputError(
            f"x must be a floating-point batch of shape (N, ...) with N samples, got dtype "
            f"{x.dtype} and shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)."
        )
    if y is not None:
        if not torch.is_tensor(y) or y.shape != x.shape[:1] or y.is_floating_point():
            raise BadInputError(
                f"y must be an integer tensor of shape ({x.shape[0]},) (one label per sample), "
                f"got {getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}."
            )
        if y.device != x.device:
            raise BadInputError(f"x is on {x.device} but y on {y.device}; move both to one device.")
    if clip is not None:
        low, high = clip
        if not low < high:
            raise BadInputError(f"clip must be (low, high) with low < high, got {clip}.")
        if x.numel() and (x.min().item() < low or x.max().item() > high):
            raise BadInputError(
                f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside the data "
                f"range clip={clip}; pass the un-normalized inputs or clip=None (no box)."
            )


def check_norm(norm: float) -> float:
    """Return ``norm`` as 2.0 or inf; raise :class:`BadInputError` for any other norm."""
    try:
        value = float(norm)
    except (TypeError, ValueError):
        value = math.nan
    if value not in (2.0, math.inf):
        raise BadInputError(f"norm must be 2 or float('inf'), got {norm!r}.")
    return value


def per_sample(
    value: float | Tensor, x: Tensor, what: str, dtype: torch.dtype | None = None
) -> Tensor:
    """``value`` (a number or N numbers) as a finite, non-negative (N,) tensor on ``x``'s
    device, in ``dtype`` (default ``x``'s)."""
    if torch.is_tensor(value):
        value = value.detach()
    tensor = torch.as_tensor(value, dtype=dtype or x.dtype, device=x.device)
    if tensor.dim() == 0:
        tensor = tensor.expand(x.shape[0])
    if tensor.shape != x.shape[:1]:
        raise BadInputError(
            f"{what} must be a number or hold one value per sample ({x.shape[0]}), "
            f"got shape {tuple(tensor.shape)}."
        )
    check_finite(tensor, what)
    if bool((tensor < 0).any()):
        raise BadInputError(f"{what} must be non-negative, got a minimum of {tensor.min().item()}.")
    return tensor.clone()


def as_column(values: Tensor, x: Tensor) -> Tensor:
    """Reshape per-sample ``values`` (N,) to broadcast against ``x`` (N, ...)."""
    return values.reshape(-1, *([1] * (x.dim() - 1)))


def l2_norms(t: Tensor) -> Tensor:
    """Per-sample Euclidean norm of a batch (N, ...)."""
    return t.flatten(1).norm(dim=1)


def clamp_to(x: Tensor, clip: Bounds) -> Tensor:
    """``x`` clipped to the data range (unchanged when ``clip`` is None)."""
    return x if clip is None else x.clamp(clip[0], clip[1])


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample ``max_{j != label} z_j - z_label``: positive exactly when another class wins."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise BadInputError(
            f"the model must return logits of shape (N, classes) with at least 2 classes, got "
            f"{tuple(logits.shape)}."
        )
    check_labels(labels, logits.shape[0], logits.shape[1])
    own = logits.gather(1, labels[:, None]).squeeze(1)
    is_label = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
    return logits.masked_fill(is_label, -math.inf).amax(dim=1) - own


@contextlib.contextmanager
def input_gradients_only(model: Model) -> Iterator[None]:
    """Within the block, ``model``'s parameters do not require gradients, so forward passes
    record no autograd graph for computations on the weights alone (e.g. a layer rescaling its
    weight on every call) and attacks differentiate w.r.t. their input only. The flags are
    restored on exit, also after an error. Non-module callables are left alone."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def input_gradients(attack: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorator: run ``attack(model, ...)`` inside :func:`input_gradients_only` ``(model)``."""

    @functools.wraps(attack)
    def wrapper(model: Model, *args, **kwargs) -> Tensor:
        with input_gradients_only(model):
            return attack(model, *args, **kwargs)

    return wrapper


class RandomizedModelWarning(UserWarning):
    """An attack on a randomized model (one with noise injection) ran without expectation
    over the noise (``eot=1``): its robust accuracy overstates the defense's robustness."""


def is_randomized(model: Model) -> bool:
    """True when ``model`` holds an active :class:`lipcert.layers.NoiseInjection` (its output
    is random: attack it with ``eot > 1`` and evaluate it with ``votes > 1``)."""
    from lipcert.layers.noise_injection import noise_layers

    if not isinstance(model, torch.nn.Module):
        return False
    return any(layer.enabled for _, layer in noise_layers(model))


def check_eot(model: Model, eot: int, votes: int = 1, stacklevel: int = 3) -> int:
    """``eot`` checked (a positive integer; ``votes`` too), with a
    :class:`RandomizedModelWarning` for ``eot=1`` on a randomized model."""
    for name, value in (("eot", eot), ("votes", votes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(
                f"{name} must be a positive integer (noise draws), got {value!r}."
            )
    if eot == 1 and is_randomized(model):
        warnings.warn(
            "attacking a model with NoiseInjection with eot=1 (one noise draw per step): the "
            "gradient is that of a single random draw and the robust accuracy overstates the "
            "defense; pass eot=20 or more (expectation over transformation, arXiv 1802.00420).",
            RandomizedModelWarning,
            stacklevel=stacklevel,
        )
    return eot


@contextlib.contextmanager
def warned_once() -> Iterator[None]:
    """Within the block, :class:`RandomizedModelWarning` is silenced (for the attacks a
    caller runs after it has issued the warning itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomizedModelWarning)
        yield


def eot_logits(model: Model, x: Tensor, eot: int = 1) -> Tensor:
    """Mean of ``eot`` forward passes of ``model`` on ``x`` (fresh noise in each, for a
    randomized model); differentiable, so its gradient is the mean of the per-draw ones."""
    logits = model(x)
    for _ in range(eot - 1):
        logits = logits + model(x)
    return logits / eot if eot > 1 else logits


def predict(model: Model, x: Tensor, votes: int = 1, labels: Tensor | None = None) -> Tensor:
    """Predicted classes of ``x`` (no gradients); with ``votes > 1`` the majority class over
    that many forward passes (fresh noise in each for a randomized model; ties go to the
    lowest class index). ``labels``, when given, are checked against the number of classes
    the model returns (:func:`lipcert.errors.check_labels`)."""
    with torch.no_grad():
        if votes == 1:
            logits = model(x)
            check_labels(labels, len(x), logits.shape[1])
            return logits.argmax(dim=1)
        counts = None
        for _ in range(votes):
            logits = model(x)
            check_labels(labels, len(x), logits.shape[1])
            one_hot = torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1])
            counts = one_hot if counts is None else counts + one_hot
        return counts.argmax(dim=1)


def attack_copy(model: Model, x: Tensor) -> Model:
    """A faster model to attack in place of ``model``: its plain-torch copy
    (:func:`lipcert.layers.to_vanilla`, whose layers do not recompute their normalized weights
    on every call) when that copy returns bit for bit the logits of ``model`` on ``x``;
    ``model`` itself otherwise (not a module, randomized, or any difference). Callers still
    verify every adversarial point on ``model``."""
    from lipcert.layers import to_vanilla

    if not isinstance(model, torch.nn.Module) or is_randomized(model) or not len(x):
        return model
    try:
        copy = to_vanilla(model, (1, *x.shape[1:]))
        with torch.no_grad():
            same = torch.equal(copy(x), model(x))
    except Exception:  # noqa: BLE001 -- a module the export cannot handle: attack the model
        return model
    return copy if same else model


def generator_for(x: Tensor, seed: int | None) -> torch.Generator | None:
    """A generator on ``x``'s device seeded with ``seed``; None (global RNG) without a seed."""
    if seed is None:
        return None
    return torch.Generator(device=x.device).manual_seed(int(seed))


def input_gradient(loss_per_sample: Tensor, x: Tensor) -> Tensor:
    """Gradient of the summed per-sample losses w.r.t. ``x`` only (parameters' .grad untouched)."""
    (grad,) = torch.autograd.grad(loss_per_sample.sum(), x)
    return grad
