"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A run folder holds ``train_state.safetensors`` (model ``state_dict`` under ``model.``, the
optimizer and scheduler tensors, the torch RNG states as uint8 tensors) and
``train_state.json`` (the epochs done and the non-tensor parts of the optimizer and
scheduler state, with each tensor replaced by a reference to its safetensors key). Both are
written atomically, tensors first; the epoch is recorded in both and compared on load, so a
crash between the two writes is reported instead of resuming from a mixture. Recipe models are
also written with :func:`lipcert.models.save` (``model.safetensors`` + ``model.json``) for
the other lipcert commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from lipcert.errors import CheckpointError
from lipcert.models.checkpoint import RUN_WEIGHTS
from lipcert.report import atomic_write_bytes, write_json

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
MODEL_FILE = RUN_WEIGHTS
FORMAT = "lipcert-train-state"
MAX_STATE_JSON_BYTES = 16 * 2**20
"""The training state's JSON holds no tensors (they are in the safetensors file): anything
larger than this is not one of lipcert's, and is refused before it is parsed."""


def read_state_json(path: Path) -> Any:
    """The parsed JSON at ``path``, refusing files over :data:`MAX_STATE_JSON_BYTES`
    (:class:`CheckpointError`); OSError and ValueError pass through to the caller."""
    size = path.stat().st_size
    if size > MAX_STATE_JSON_BYTES:
        raise CheckpointError(f"{path} has {size} bytes, more than a lipcert training state's "
                              f"JSON ever holds ({MAX_STATE_JSON_BYTES}); it is not one.")
    return json.loads(path.read_text())


def split_tensors(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` whose tensors are moved into ``tensors`` under ``key`` paths.

    Dicts become ``{"dict": [[key, value], ...]}`` (keys may be ints), tuples
    ``{"tuple": [...]}`` and tensors ``{"tensor": name}``, so :func:`join_tensors` restores
    the exact structure.
    """
    if torch.is_tensor(obj):
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"tensor": key}
    if isinstance(obj, dict):
        return {"dict": [[k, split_tensors(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(
        f"cannot store {key} of type {type(obj).__name__} without pickle; use an optimizer and "
        "scheduler whose state holds only tensors, numbers and strings."
    )


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "tensor" in obj:
            if obj["tensor"] not in tensors:
                raise CheckpointError(f"training state lacks tensor {obj['tensor']!r}.")
            return tensors[obj["tensor"]]
        if "tuple" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["tuple"])
        return {k: join_tensors(v, tensors) for k, v in obj["dict"]}
    return obj


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch RNG states that training consumes (CPU, and the CUDA device in use)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_state(
    folder: Path,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    settings: dict[str, Any] | None = None,
) -> None:
    """Write the state after ``epoch`` epochs (1-based count) to ``folder``, with the run's
    ``settings`` (JSON values) that :func:`check_settings` compares on resume."""
    tensors: dict[str, torch.Tensor] = {}
    split_tensors(model.state_dict(), "model", tensors)
    skeleton = {
        "format": FORMAT,
        "epoch": epoch,
        "settings": settings,
        "optimizer": split_tensors(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": split_tensors(scheduler.state_dict(), "scheduler", tensors),
        "rng": split_tensors(rng_states(device), "rng", tensors),
    }
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT, "epoch": str(epoch)})
    atomic_write_bytes(folder / STATE_TENSORS, data)
    write_json(folder / STATE_JSON, skeleton)


def saved_epoch(folder: Path) -> int | None:
    """Epochs done in the training state under ``folder``, or None if there is none."""
    path = folder / STATE_JSON
    if not path.exists():
        return None
    try:
        return int(read_state_json(path)["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a lipcert training state ({err}).") from err


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume the run in ``folder`` with other settings than it was trained with.

    A resumed run must continue the one that was interrupted: a changed learning rate, epoch
    count (it stretches the schedule), batch, loss, seed or noise would silently give a run
    that neither setting describes. Raises :class:`CheckpointError` naming every difference
    (a different model recipe first, in one line). States written before settings were
    recorded are not checked.
    """
    path = folder / STATE_JSON
    try:
        saved = read_state_json(path).get("settings")
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"cannot read the training state {path} ({err}).") from err
    if not isinstance(saved, dict):
        return
    current = json.loads(json.dumps(settings, default=str))  # as it would be stored
    if saved.get("model") != current.get("model"):
        raise CheckpointError(
            f"{folder} holds a run of model {_describe_model(saved.get('model'))}, which does "
            f"not match {_describe_model(current.get('model'))}; resume with the same --model, "
            "or start a new --out folder.")
    changed = [f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
               for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if changed:
        raise CheckpointError(
            f"cannot resume {folder} with other settings than it was trained with ("
            + "; ".join(changed) + "). Resume with the original settings, or start a new --out "
            "folder (--overwrite to replace this one).")


def _describe_model(spec: Any) -> str:
    if isinstance(spec, dict) and "recipe" in spec:
        args = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("args") or {}).items()))
        return f"{spec['recipe']!r} ({args})"
    if isinstance(spec, dict) and "class" in spec:
        return f"{spec['class']} with {spec.get('parameters')} parameters"
    return repr(spec)


def load_state(
    folder: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
) -> int:
    """Restore model, optimizer, scheduler and RNG from ``folder``; return the epochs done."""
    json_path, tensor_path = folder / STATE_JSON, folder / STATE_TENSORS
    try:
        skeleton = read_state_json(json_path)
        with safetensors.safe_open(str(tensor_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(
            f"cannot read the training state in {folder} ({err}); start without --resume or "
            "point --out at the run to continue."
        ) from err
    if skeleton.get("format") != FORMAT or metadata.get("epoch") != str(skeleton.get("epoch")):
        raise CheckpointError(
            f"{json_path} and {tensor_path} do not belong together (epoch "
            f"{skeleton.get('epoch')} vs {metadata.get('epoch')}): a write was interrupted. "
            "Start the run again without --resume."
        )
    model_state = join_tensors(skeleton_of(tensors, "model"), tensors)
    try:
        model.load_state_dict(model_state, strict=True)
        optimizer.load_state_dict(join_tensors(skeleton["optimizer"], tensors))
        scheduler.load_state_dict(join_tensors(skeleton["scheduler"], tensors))
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"the training state in {folder} does not match this model or optimizer ({err}); "
            "resume with the same model, optimizer and schedule, or start a new --out folder."
        ) from err
    set_rng_states(join_tensors(skeleton["rng"], tensors), device)
    return int(skeleton["epoch"])


def skeleton_of(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """The :func:`split_tensors` skeleton of a flat ``state_dict`` stored under ``prefix.``."""
    start = prefix + "."
    return {"dict": [[k[len(start):], {"tensor": k}] for k in tensors if k.startswith(start)]}
