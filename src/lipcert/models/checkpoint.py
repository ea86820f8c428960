"""Save and load recipe models as safetensors weights plus a JSON spec; nothing is unpickled.

On-disk layout (``format_version`` 1)
-------------------------------------
A checkpoint at ``PATH`` (the name must end in ``.safetensors``) is two files side by side:

- ``PATH``, e.g. ``run/model.safetensors``: the model's ``state_dict`` as saved, in the
  safetensors format (parameters, the ``parametrizations.<name>.original`` tensors of
  parametrized weights, and buffers such as power-iteration state). Any safetensors reader
  can open it; lipcert reads it with ``safetensors.torch.load``, never with pickle.
- ``PATH`` with the suffix ``.json``, e.g. ``run/model.json``: the spec, a JSON object with
  ``format`` (``"lipcert-checkpoint"``), ``format_version``, ``lipcert_version``, ``recipe``
  and ``args`` (enough for :func:`lipcert.models.build` to rebuild the architecture),
  ``dtype`` (of the floating-point tensors), ``dataset``, ``normalization`` and ``extra``
  (free JSON from the caller, ``null`` when not given), ``weights`` (file name, size in bytes
  and SHA-256 of the weights file) and ``tensors`` (name -> ``shape`` and ``dtype``).

Both files are written atomically (temporary file, then rename), weights first: a crash
between the two leaves new weights beside an old spec, which :func:`load` reports as a
mismatch instead of loading a mixture. :func:`load` checks the spec fields; that the weights
parse; the tensor table (names, shapes, dtypes) of the file against the spec; the size and
SHA-256; the spec's table against a freshly built recipe (buffers may differ in shape, e.g.
CPL's power-iteration vector, whose shape follows the inputs seen); finiteness; and then
``load_state_dict(strict=True)``. Each failure raises :class:`lipcert.CheckpointError` naming
the field or tensor that is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load as parse_safetensors
from safetensors.torch import save as serialize_safetensors
from torch import nn

import lipcert
from lipcert.errors import BadInputError, CheckpointError
from lipcert.models.registry import SPEC_ATTRIBUTE, build
from lipcert.report import atomic_write_bytes

FORMAT = "lipcert-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"

TensorTable = dict[str, dict[str, Any]]


def spec_path(path: str | Path) -> Path:
    """Where the JSON spec of the checkpoint at ``path`` lives: ``path`` with suffix ``.json``."""
    return _weights_path(path).with_suffix(".json")


def save(
    model: nn.Module,
    path: str | Path,
    *,
    dataset: str | None = None,
    normalization: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` (built by :func:`lipcert.models.build`) to ``path`` and its JSON spec.

    Args:
        model: a recipe model; its ``lipcert_spec`` attribute names the recipe and arguments.
            Its floating-point tensors must share one dtype and be finite.
        path: the weights file, ending in ``.safetensors``; the spec goes to
            :func:`spec_path` ``(path)``. Folders are created.
        dataset: name of the data set the model was trained on, e.g. ``"mnist-5k"``.
        normalization: the input normalization the model expects, as JSON, e.g.
            ``{"mean": [0.1307], "std": [0.3081]}``.
        extra: any other JSON object to keep with the checkpoint (epoch, metrics...).

    Returns the spec written. Raises :class:`lipcert.CheckpointError` for a model that was not
    built from a recipe or no longer matches it (``load`` could not rebuild it), NaN/Inf or
    mixed-precision weights, or metadata that is not JSON.
    """
    weights_path = _weights_path(path)
    recipe, args = _recipe_of(model)
    tensors = {
        name: value.detach().to("cpu", copy=True).contiguous()
        for name, value in model.state_dict().items()
    }
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"refusing to save: tensor {name!r} holds NaN or Inf values; check the training "
                "run (learning rate, initialization) that produced them."
            )
    dtype = _common_float_dtype(tensors)
    table = _tensor_table(tensors)
    fresh = _rebuild(recipe, args, dtype)
    _compare_tables(
        table, _tensor_table(fresh.state_dict()), "the model",
        f"a fresh {recipe!r} recipe model", any_shape=_buffer_names(fresh),
        hint="the model was changed after build (e.g. converted by to_vanilla or resized); only "
        "models whose state_dict matches their recipe can be saved and rebuilt.",
    )
    data = serialize_safetensors(tensors, metadata={"format": "pt", "lipcert_recipe": recipe})
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lipcert_version": lipcert.__version__,
        "recipe": recipe,
        "args": args,
        "dtype": _dtype_name(dtype),
        "dataset": _checked_json(dataset, "dataset", str),
        "normalization": _checked_json(normalization, "normalization", Mapping),
        "extra": _checked_json(extra, "extra", Mapping),
        "weights": {
            "file": weights_path.name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "tensors": table,
    }
    text = json.dumps(spec, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(weights_path, data)
    atomic_write_bytes(spec_path(weights_path), text.encode())
    return spec


def read_spec(path: str | Path) -> dict[str, Any]:
    """The checked JSON spec of the checkpoint at ``path`` (the ``.safetensors`` file or its
    ``.json`` spec); see the module docstring for its fields. Does not read the weights.

    Raises :class:`lipcert.CheckpointError` if the spec is missing, is not JSON, or a field is
    missing or malformed (the message names the field).
    """
    path = Path(path)
    where = path if path.suffix == ".json" else spec_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint spec {where} does not exist; a checkpoint is a .safetensors file with "
            "a .json spec beside it, both written by lipcert.models.save."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read checkpoint spec {where}: {err}") from err
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint spec {where} is not valid JSON: {err}") from err
    _check_spec_fields(spec, where)
    return spec


def load(path: str | Path, map_location: str | torch.device | None = None) -> nn.Module:
    """Rebuild the model saved at ``path`` by :func:`save`, with its exact weights and buffers.

    The recipe named in the spec is built, converted to the saved dtype, filled with
    ``load_state_dict(strict=True)`` and returned in eval mode, on ``map_location`` (default:
    the CPU). Nothing is unpickled. Raises :class:`lipcert.CheckpointError` naming what is
    wrong: a missing or truncated file, bad JSON, a missing or malformed spec field, an unknown
    recipe or bad arguments, a tensor missing, unexpected, or of the wrong shape or dtype, a
    SHA-256 mismatch, or NaN/Inf weights.
    """
    weights_path = _weights_path(path)
    spec = read_spec(weights_path)
    data = _read_weights(weights_path)
    expected_bytes = spec["weights"]["bytes"]
    try:
        tensors = parse_safetensors(data)
    except safetensors.SafetensorError as err:
        if len(data) < expected_bytes:
            raise CheckpointError(
                f"weights file {weights_path} is truncated: {len(data)} bytes, its spec field "
                f"weights.bytes says {expected_bytes} ({err})."
            ) from err
        raise CheckpointError(
            f"weights file {weights_path} is corrupted ({len(data)} bytes; its spec field "
            f"weights.bytes says {expected_bytes}): {err}"
        ) from err
    _compare_tables(
        _tensor_table(tensors), spec["tensors"], f"weights file {weights_path}", "its spec",
        hint="the weights file was replaced or edited; save the model again.",
    )
    if len(data) != expected_bytes:
        raise CheckpointError(
            f"weights file {weights_path} has {len(data)} bytes, but its spec field "
            f"weights.bytes says {expected_bytes}: the file was modified or the spec belongs to "
            "another checkpoint."
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec["weights"]["sha256"]:
        raise CheckpointError(
            f"weights file {weights_path} has SHA-256 {digest}, but its spec field "
            f"weights.sha256 says {spec['weights']['sha256']}: the file was modified or the spec "
            "belongs to another checkpoint."
        )
    dtype = _parse_dtype(spec["dtype"], "dtype", spec_path(weights_path))
    model = _rebuild(spec["recipe"], spec["args"], dtype)
    hint = "the spec's recipe or args do not describe these weights."
    _compare_tables(
        spec["tensors"], _tensor_table(model.state_dict()), f"checkpoint {weights_path}",
        f"recipe {spec['recipe']!r} with the saved args", any_shape=_buffer_names(model),
        hint=hint,
    )
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"tensor {name!r} in {weights_path} holds NaN or Inf values.")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # a buffer whose shape the module does not adopt
        raise CheckpointError(f"checkpoint {weights_path} does not fit its recipe: {err}; "
                              f"{hint}") from err
    return model.to(map_location or "cpu").eval()


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise CheckpointError(
            f"checkpoint path {path} must end in {WEIGHTS_SUFFIX} (the weights file; the JSON "
            "spec is written beside it with the suffix .json)."
        )
    return path


def _recipe_of(model: nn.Module) -> tuple[str, dict[str, int]]:
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, Mapping) or "recipe" not in spec or "args" not in spec:
        raise CheckpointError(
            f"only models built by lipcert.models.build can be saved (a {type(model).__name__} "
            f"without a {SPEC_ATTRIBUTE!r} attribute was given): the checkpoint stores the "
            "recipe and its arguments, never pickled code. Build the model with "
            "lipcert.models.build(name, ...) and train that."
        )
    return str(spec["recipe"]), dict(spec["args"])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _parse_dtype(name: Any, field: str, where: Path) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"field {field} of {where} is not a torch dtype name: {name!r}.")
    return dtype


def _common_float_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
    dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
    if len(dtypes) > 1:
        names = ", ".join(sorted(_dtype_name(d) for d in dtypes))
        raise CheckpointError(
            f"the model mixes floating-point dtypes ({names}); convert it to one with "
            "model.to(torch.float32) or model.to(torch.float64) before saving."
        )
    return dtypes.pop() if dtypes else torch.get_default_dtype()


def _tensor_table(tensors: Mapping[str, torch.Tensor]) -> TensorTable:
    return {
        name: {"shape": list(value.shape), "dtype": _dtype_name(value.dtype)}
        for name, value in tensors.items()
    }


def _rebuild(recipe: str, args: Mapping[str, Any], dtype: torch.dtype) -> nn.Module:
    """A fresh model of ``recipe`` in ``dtype`` (its initial values are overwritten or only
    compared, so a fixed seed spares the caller's global generator); CheckpointError if it
    cannot be built."""
    try:
        return build(recipe, seed=0, **args).to(dtype)
    except BadInputError as err:
        raise CheckpointError(
            f"recipe {recipe!r} with args {dict(args)} cannot be rebuilt (spec fields 'recipe' "
            f"and 'args'): {err}"
        ) from err


def _buffer_names(model: nn.Module) -> frozenset[str]:
    """Buffers, whose shape may follow the inputs seen (e.g. CPL's power-iteration vector)."""
    return frozenset(name for name, _ in model.named_buffers())


def _compare_tables(
    found: Mapping[str, Mapping[str, Any]],
    expected: Mapping[str, Mapping[str, Any]],
    found_in: str,
    expected_by: str,
    *,
    hint: str,
    any_shape: frozenset[str] = frozenset(),
) -> None:
    """Raise :class:`CheckpointError` naming the first tensor that differs between two tables
    (a missing or extra name, a dtype, or a shape except for the names in ``any_shape``)."""
    for name in expected:
        if name not in found:
            raise CheckpointError(f"tensor {name!r} is missing from {found_in}: {hint}")
    for name, entry in found.items():
        if name not in expected:
            raise CheckpointError(
                f"{found_in} has tensor {name!r}, which {expected_by} does not have: {hint}"
            )
        for key in ("dtype",) if name in any_shape else ("shape", "dtype"):
            if entry[key] != expected[name][key]:
                raise CheckpointError(
                    f"tensor {name!r} has {key} {entry[key]} in {found_in}, but {expected_by} "
                    f"expects {expected[name][key]}: {hint}"
                )


def _checked_json(value: Any, field: str, kind: type) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind):
        raise BadInputError(
            f"{field} must be a {kind.__name__} or None, got {type(value).__name__}."
        )
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise BadInputError(f"{field} must be plain JSON (no NaN, no objects): {err}") from err


_SPEC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "lipcert_version": str,
    "recipe": str,
    "args": dict,
    "dtype": str,
    "dataset": (str, type(None)),
    "normalization": (dict, type(None)),
    "extra": (dict, type(None)),
    "weights": dict,
    "tensors": dict,
}


def _check_spec_fields(spec: Any, where: Path) -> None:
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint spec {where} must hold a JSON object.")
    for field, kind in _SPEC_FIELDS.items():
        if field not in spec:
            raise CheckpointError(f"checkpoint spec {where} lacks the field {field!r}.")
        if not isinstance(spec[field], kind):
            raise CheckpointError(
                f"field {field!r} of checkpoint spec {where} has the wrong type "
                f"({type(spec[field]).__name__})."
            )
    if spec["format"] != FORMAT:
        raise CheckpointError(f"field 'format' of {where} is {spec['format']!r}, not {FORMAT!r}.")
    if spec["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format_version {spec['format_version']}, newer than this lipcert "
            f"({lipcert.__version__}) reads ({FORMAT_VERSION}); upgrade lipcert."
        )
    weights = spec["weights"]
    if not isinstance(weights.get("bytes"), int) or not isinstance(weights.get("sha256"), str):
        raise CheckpointError(
            f"field 'weights' of {where} needs an integer 'bytes' and a string 'sha256'."
        )
    for name, entry in spec["tensors"].items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("shape"), list)
            or not all(isinstance(n, int) for n in entry["shape"])
            or not isinstance(entry.get("dtype"), str)
        ):
            raise CheckpointError(
                f"entry {name!r} of field 'tensors' in {where} needs a 'shape' (list of "
                "integers) and a 'dtype' (string)."
            )


def _read_weights(weights_path: Path) -> bytes:
    try:
        return weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"weights file {weights_path} does not exist (its spec {spec_path(weights_path)} "
            "does)."
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read weights file {weights_path}: {err}") from err
