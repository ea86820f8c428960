"""The table of named model recipes and :func:`build`, which turns a name into a module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.models import lipschitz, plain, structured

SPEC_ATTRIBUTE = "lipcert_spec"
"""Name of the attribute where :func:`build` records ``{"recipe": name, "args": {...}}``."""

MNIST_SHAPE = {"in_channels": 1, "image_size": 28, "num_classes": 10}


@dataclass(frozen=True)
class Recipe:
    """A named architecture.

    Attributes:
        name: the name passed to :func:`build`.
        summary: one line for :func:`describe`.
        builder: called with every argument as a keyword (positive integers, except string
            arguments whose default is a string, such as ``cnn-s``'s ``noise``).
        defaults: the arguments it accepts and their default values.
    """

    name: str
    summary: str
    builder: Callable[..., nn.Module]
    defaults: Mapping[str, int | str]


def _recipe(name: str, summary: str, builder: Callable[..., nn.Module],
            **sizes: int | str) -> Recipe:
    return Recipe(name, summary, builder, MappingProxyType({**MNIST_SHAPE, **sizes}))


_REGISTRY: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        _recipe(
            "sll-s", "SLL network (Araujo et al. 2023, arXiv 2303.03169), CPU-sized: "
            "channel padding, SLL conv blocks, norm pooling, SLL dense blocks, normalized last "
            "layer; 1-Lipschitz up to the last layer",
            lipschitz.sll_network, width=16, depth=2, dense_width=128, dense_depth=2,
        ),
        _recipe(
            "sll-m", "two-stage SLL network (arXiv 2303.03169), CPU-sized: space-to-depth, "
            "SLL conv blocks on width channels, space-to-depth, SLL conv blocks on 4 * width "
            "channels, SLL dense blocks, normalized last layer; 1-Lipschitz up to the last "
            "layer",
            lipschitz.sll_staged_network, width=8, depth=2, dense_width=128, dense_depth=2,
        ),
        _recipe(
            "cpl-s", "convex potential network (Meunier et al. 2022, arXiv 2110.12690), "
            "CPU-sized, in the SLL layout with CPL blocks; 1-Lipschitz up to the last layer",
            lipschitz.cpl_network, width=16, depth=2, dense_width=128, dense_depth=2,
        ),
        _recipe(
            "aol-s", "AOL network (Prach & Lampert 2022, arXiv 2208.03160), CPU-sized: AOL convs "
            "and dense layers with MaxMin; 1-Lipschitz up to the last layer",
            lipschitz.aol_network, width=16, depth=2, dense_width=128, dense_depth=2,
        ),
        _recipe(
            "spectral-s", "spectrally normalized network (Gram-iteration upper bound), CPU-sized, "
            "with MaxMin; 1-Lipschitz up to the last layer",
            lipschitz.spectral_network, width=16, depth=2, dense_width=128, dense_depth=2,
        ),
        _recipe(
            "lmt-mnist", "plain 2-conv/2-dense CNN of Kolter & Wong used by LMT (Tsuzuku et al. "
            "2018, arXiv 1802.04034); unconstrained",
            plain.lmt_cnn, width=16, depth=2, dense_width=100, dense_depth=1,
        ),
        _recipe(
            "dcnn-s", "deep diagonal-circulant network (Araujo et al. 2019, arXiv 1901.10255): "
            "flatten, depth DC layers of width units with Leaky-ReLU, DC head; unconstrained",
            structured.dcnn_network, width=784, depth=2,
        ),
        _recipe(
            "dcnn-lip-s", "Lipschitz diagonal-circulant network: normalized DC input layer, "
            "orthogonal circulant layers, MaxMin, normalized last layer; 1-Lipschitz up to the "
            "last layer",
            structured.dcnn_lip_network, width=784, depth=2,
        ),
        _recipe(
            "cnn-s", "plain small CNN (conv-pool blocks, dense head) for adversarial training, "
            "noise injection and RAT (arXiv 1902.01148, 1903.10219, 2012.02632); noise="
            "'LAW:SIGMA' puts a NoiseInjection at the input; unconstrained",
            plain.small_cnn, width=32, depth=2, dense_width=128, dense_depth=1,
            noise=plain.NO_NOISE,
        ),
    )
}

RECIPES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`build`."""

NORMALIZE_CHOICES: tuple[str, ...] = ("none", "channels")
"""Values of the ``normalize`` argument every recipe takes (see :func:`build`)."""


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``; :class:`BadInputError` listing the names if unknown."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BadInputError(f"unknown model recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return _REGISTRY[name]


def describe(name: str) -> str:
    """One line saying what recipe ``name`` builds and its default arguments."""
    recipe = get_recipe(name)
    args = ", ".join(f"{key}={value}" for key, value in recipe.defaults.items())
    return f"{name}: {recipe.summary} ({args})"


def default_args(name: str) -> dict[str, int]:
    """The arguments recipe ``name`` accepts, with their default values."""
    return dict(get_recipe(name).defaults)


def resolve_args(name: str, overrides: Mapping[str, Any]) -> dict[str, int]:
    """The defaults of recipe ``name`` updated with ``overrides``, checked.

    Raises :class:`BadInputError` for an argument the recipe does not take (listing those it
    takes) or a value that is not a positive integer.
    """
    recipe = get_recipe(name)
    normalize = overrides.get("normalize", "none")
    if normalize not in NORMALIZE_CHOICES:
        raise BadInputError(f"recipe {name!r}: normalize must be one of "
                            f"{', '.join(NORMALIZE_CHOICES)}, got {normalize!r}.")
    overrides = {key: value for key, value in overrides.items() if key != "normalize"}
    unknown = sorted(set(overrides) - set(recipe.defaults))
    if unknown:
        raise BadInputError(
            f"recipe {name!r} does not take {', '.join(unknown)}; its arguments are "
            f"{', '.join(recipe.defaults)}."
        )
    args = {**recipe.defaults, **overrides}
    for key, value in args.items():
        if isinstance(recipe.defaults[key], str):
            if not isinstance(value, str):
                raise BadInputError(
                    f"recipe {name!r}: {key} must be a string, got {value!r}."
                )
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInputError(
                f"recipe {name!r}: {key} must be a positive integer, got {value!r}."
            )
    if normalize != "none":  # recorded only when used: specs without it stay as they were
        args["normalize"] = normalize
    return args


def build(name: str, *, seed: int | None = None, **overrides: int) -> nn.Module:
    """Build model recipe ``name`` (one of :data:`RECIPES`), defaults sized for MNIST.

    Every recipe takes ``in_channels``, ``image_size`` (square images), ``num_classes``,
    ``width`` and ``depth`` (the convolutional ones also ``dense_width`` and ``dense_depth``);
    see :func:`describe`. The
    model is freshly initialized from torch's global generator, or, with ``seed``, from that
    seed without touching the global generator; it is in training mode, on the CPU, in float32,
    and records its recipe in ``model.lipcert_spec = {"recipe": name, "args": {...all
    resolved arguments...}}`` so :func:`lipcert.models.save` can write it.

    ``normalize="channels"`` (any recipe) puts a per-channel :class:`lipcert.bounds.Normalize`
    first, initialized to the identity (mean 0, std 1): set it from the training images with
    :func:`fit_input_normalization`. The model then takes raw images in [0, 1], so its
    certificates and attacks stay in input units; its mean and std are buffers, saved and
    checked with the weights. Its Lipschitz bound includes the factor ``1 / min(std)``.
    """
    args = resolve_args(name, overrides)
    sizes = {key: value for key, value in args.items() if key != "normalize"}
    if seed is None:
        model = get_recipe(name).builder(**sizes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = get_recipe(name).builder(**sizes)
    if args.get("normalize") == "channels":
        model = _with_input_normalization(model, args["in_channels"])
    setattr(model, SPEC_ATTRIBUTE, {"recipe": name, "args": dict(args)})
    return model


def _with_input_normalization(model: nn.Module, channels: int) -> nn.Sequential:
    from lipcert.bounds.normalize import Normalize

    layers = list(model) if isinstance(model, nn.Sequential) else [model]
    return nn.Sequential(Normalize(torch.zeros(channels), torch.ones(channels)), *layers)


def fit_input_normalization(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set the input normalization of a recipe built with ``normalize="channels"`` to the
    per-channel mean and (population) standard deviation of ``images`` (N, C, ...), computed
    in float64; returns that :class:`lipcert.bounds.Normalize` layer. A constant channel
    (std below 1e-6) is an error: dividing by it would make the model's Lipschitz constant,
    and so its certificates, meaningless."""
    from lipcert.bounds.normalize import Normalize

    first = model[0] if isinstance(model, nn.Sequential) and len(model) else None
    if not isinstance(first, Normalize):
        raise BadInputError("the model has no input normalization to fit; build it with "
                            "lipcert.models.build(name, normalize='channels').")
    if not torch.is_tensor(images) or images.dim() < 2 or images.shape[1] != first.mean.numel():
        raise BadInputError(f"images must be a batch (N, {first.mean.numel()}, ...) with one "
                            f"channel per normalized value, got "
                            f"{tuple(getattr(images, 'shape', ()))}.")
    dims = [0, *range(2, images.dim())]
    values = images.detach().to(torch.float64)
    mean, std = values.mean(dims), values.std(dims, correction=0)
    if bool((std < 1e-6).any()):
        raise BadInputError(f"channel(s) {(std < 1e-6).nonzero().flatten().tolist()} of the "
                            "images are constant; they cannot be normalized.")
    with torch.no_grad():
        first.mean.copy_(mean)
        first.std.copy_(std)
    return first
