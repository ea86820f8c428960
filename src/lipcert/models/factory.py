"""A user's own model in lipcert: a factory function named on the command line or in a Python
call, plus a weights file.

Recipes (:func:`lipcert.models.build`) cover the papers' architectures; any other
``nn.Module`` comes from ``package.module:function`` (called with keyword arguments) and a
safetensors file of its ``state_dict``. The factory is imported only from what the caller
passes here (``--factory`` on the command line, or a Python argument), never from the
contents of a file, so a checkpoint cannot make lipcert import code.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from lipcert.errors import BadInputError, CheckpointError

__all__ = ["import_factory", "parse_factory_args", "build_from_factory", "save_weights",
           "load_weights"]

WEIGHTS_FORMAT = "lipcert-weights"


def import_factory(target: str) -> Callable[..., nn.Module]:
    """The function ``package.module:function`` names (importing ``package.module``)."""
    module_name, sep, attribute = str(target).partition(":")
    if not sep or not module_name or not attribute:
        raise BadInputError(f"--factory {target!r}: give it as package.module:function.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BadInputError(f"--factory {target!r}: cannot import {module_name} ({err}); is "
                            "it on PYTHONPATH?") from err
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise BadInputError(f"--factory {target!r}: {module_name} has no {attribute}.")
    if not callable(factory):
        raise BadInputError(f"--factory {target!r} is not callable.")
    return factory


def parse_factory_args(text: str | None) -> dict[str, Any]:
    """``--factory-args`` JSON (an object of keyword arguments); ``None`` gives ``{}``."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise BadInputError(f"--factory-args is not JSON ({err}); give an object such as "
                            "'{\"width\": 64}'.") from err
    if not isinstance(value, dict):
        raise BadInputError("--factory-args must be a JSON object of keyword arguments.")
    return value


def build_from_factory(target: str, arguments: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the factory ``target`` with ``arguments``; it must return an ``nn.Module``."""
    factory = import_factory(target)
    try:
        model = factory(**dict(arguments or {}))
    except TypeError as err:
        raise BadInputError(f"--factory {target}: {err} (check --factory-args).") from err
    if not isinstance(model, nn.Module):
        raise BadInputError(f"--factory {target} returned {type(model).__name__}, not a "
                            "torch.nn.Module.")
    return model


def save_weights(model: nn.Module, path: str | Path, factory: str | None = None) -> Path:
    """Write ``model.state_dict()`` to ``path`` as safetensors (atomically). ``factory`` is
    recorded in the metadata for people to read; lipcert never imports it from there."""
    from lipcert.report import atomic_write_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": WEIGHTS_FORMAT, "factory": factory or ""}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))
    return Path(path)


def load_weights(model: nn.Module, path: str | Path,
                 map_location: str | torch.device | None = None) -> nn.Module:
    """Fill ``model`` with the safetensors ``state_dict`` at ``path``: every tensor name and
    shape must match (checked from the header, before any weight is read)."""
    path = Path(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
            if found != expected:
                missing = sorted(set(expected) - set(found))
                extra = sorted(set(found) - set(expected))
                wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
                parts = [f"missing {', '.join(missing[:5])}" if missing else "",
                         f"unexpected {', '.join(extra[:5])}" if extra else "",
                         "other shapes for " + ", ".join(
                             f"{k} ({found[k]} vs {expected[k]})" for k in wrong[:5])
                         if wrong else ""]
                raise CheckpointError(f"weights {path} do not fit the factory's model: "
                                      + "; ".join(p for p in parts if p) + ".")
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except (OSError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"cannot read weights {path} ({err}).") from err
    model.load_state_dict(state, strict=True)
    return model.to(map_location) if map_location is not None else model
