"""Save and load recipe models as safetensors weights plus a JSON spec; nothing is unpickled.

On-disk layout (``format_version`` 2)
-------------------------------------
A checkpoint at ``PATH`` (the name must end in ``.safetensors``) is two files side by side:

- ``PATH``, e.g. ``run/model.safetensors``: the model's ``state_dict`` as saved, in the
  safetensors format (parameters, the ``parametrizations.<name>.original`` tensors of
  parametrized weights, and buffers such as power-iteration state). Its header metadata holds
  ``lipcert_recipe`` (the recipe name) and ``lipcert_spec``, the canonical JSON of
  ``{"recipe", "args", "dtype"}``: the recipe is part of the weights file, so the SHA-256 of
  the weights covers the weights AND the function they are meant for. Any safetensors reader
  can open it; lipcert never unpickles.
- ``PATH`` with the suffix ``.json``, e.g. ``run/model.json``: the spec, a JSON object with
  exactly the fields ``format`` (``"lipcert-checkpoint"``), ``format_version``,
  ``lipcert_version``, ``recipe`` and ``args`` (every argument of
  :func:`lipcert.models.build`, resolved), ``dtype`` (of the floating-point tensors:
  float16, bfloat16, float32 or float64), ``dataset``, ``normalization`` and ``extra`` (free
  JSON from the caller, ``null`` when not given), ``weights`` (``file``, ``bytes`` and
  ``sha256`` of the weights file) and ``tensors`` (name -> ``shape`` and ``dtype``).

Both files are written atomically (temporary file, then rename), weights first: a crash
between the two leaves new weights beside an old spec, which :func:`load` reports as a
mismatch instead of loading a mixture.

What :func:`load` checks, in this order, each failure a :class:`lipcert.CheckpointError` naming
the field or tensor: the spec's size (:data:`MAX_SPEC_BYTES`), JSON syntax (no NaN/Infinity),
every field's type and value (no missing or unknown fields, args the recipe takes and nothing
else, a float dtype); the safetensors header (parsed alone, before any tensor) against the
spec's tensor table; the file's size and SHA-256; the args against what the weights could
hold; the tensor table that the recipe WOULD have, computed on the ``meta`` device (no memory)
or, for recipes that need real values while being built, with every allocation capped by the
sizes in the header; the recipe, args and dtype recorded inside the weights (format 2; a
format-1 file records only the recipe name: re-save it to bind its args too); finiteness; and
only then builds the model and calls ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load as parse_safetensors
from safetensors.torch import save as serialize_safetensors
from torch import nn
from torch.overrides import TorchFunctionMode

import lipcert
from lipcert.errors import BadInputError, CheckpointError
from lipcert.models.registry import SPEC_ATTRIBUTE, build, get_recipe, resolve_args
from lipcert.report import atomic_write_bytes

FORMAT = "lipcert-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_SUFFIX = ".safetensors"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
MAX_SPEC_BYTES = 16 * 2**20
"""Largest JSON spec read (a spec lists one line per tensor: a few kB)."""
MAX_HEADER_BYTES = 100_000_000
"""Largest safetensors header read (the safetensors library's own limit)."""
MAX_ARG = 2**31 - 1

# safetensors dtype codes -> torch dtype names (the spec's "dtype" strings)
_HEADER_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}
_TENSOR_DTYPES = frozenset(_HEADER_DTYPES.values())
_SHA256 = re.compile(r"[0-9a-f]{64}")

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
            Its floating-point tensors must share one dtype (float16, bfloat16, float32 or
            float64) and be finite.
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
    expected, buffers = _recipe_table(recipe, args, dtype, budget=None)
    _compare_tables(
        table, expected, "the model", f"a fresh {recipe!r} recipe model", any_shape=buffers,
        hint="the model was changed after build (e.g. converted by to_vanilla or resized); only "
        "models whose state_dict matches their recipe can be saved and rebuilt.",
    )
    identity = {"recipe": recipe, "args": args, "dtype": _dtype_name(dtype)}
    data = serialize_safetensors(tensors, metadata={
        "format": "pt", "lipcert_recipe": recipe, "lipcert_spec": _canonical(identity),
    })
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lipcert_version": lipcert.__version__,
        **identity,
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

    Raises :class:`lipcert.CheckpointError` if the spec is missing, too large, is not JSON
    (NaN and Infinity are not JSON), or a field is missing, unknown or malformed (the message
    names the field).
    """
    path = Path(path)
    where = path if path.suffix == ".json" and not path.is_dir() else spec_path(path)
    try:
        with where.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint spec {where} does not exist; a checkpoint is a .safetensors file with "
            "a .json spec beside it, both written by lipcert.models.save."
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint spec {where}: {err}") from err
    if len(raw) > MAX_SPEC_BYTES:
        raise CheckpointError(
            f"checkpoint spec {where} is larger than {MAX_SPEC_BYTES} bytes; a spec written by "
            "lipcert.models.save has a few kB."
        )
    spec = _strict_json(raw, f"checkpoint spec {where}")
    _check_spec_fields(spec, where)
    return spec


def load(path: str | Path, map_location: str | torch.device | None = None) -> nn.Module:
    """Rebuild the model saved at ``path`` by :func:`save`, with its exact weights and buffers.

    The recipe named in the spec is built, converted to the saved dtype, filled with
    ``load_state_dict(strict=True)`` and returned in eval mode, on ``map_location`` (default:
    the CPU). Nothing is unpickled, and nothing larger than the weights file is allocated
    before the spec, the header and the recipe's tensor table agree (see the module docstring
    for the order of the checks). Raises :class:`lipcert.CheckpointError` naming what is
    wrong: a missing or truncated file, bad JSON, a missing, unknown or malformed spec field,
    an unknown recipe or bad arguments, a tensor missing, unexpected, or of the wrong shape or
    dtype, a SHA-256 mismatch, a recipe that is not the one the weights were saved for, or
    NaN/Inf weights. ``path`` may be a run folder of ``lipcert train`` (its
    ``model.safetensors``); a ``map_location`` this machine does not have (CUDA without a GPU)
    is a :class:`lipcert.BadInputError` before anything is read.
    """
    target = _check_device(map_location)
    weights_path = _weights_path(path)
    spec = read_spec(weights_path)
    data = _read_weights(weights_path)
    expected_bytes = spec["weights"]["bytes"]
    header_table, metadata = _read_header(data, weights_path, expected_bytes)
    _compare_tables(
        header_table, spec["tensors"], f"weights file {weights_path}", "its spec",
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
    recipe, args = spec["recipe"], spec["args"]
    dtype = getattr(torch, spec["dtype"])
    budget = sum(math.prod(entry["shape"]) for entry in header_table.values())
    for key, value in args.items():
        if isinstance(value, int) and value > budget + len(header_table) + 64:
            raise CheckpointError(
                f"spec field args.{key} = {value} of {weights_path} is larger than its "
                f"{budget}-element weights could hold: the spec's recipe or args do not describe "
                "these weights."
            )
    hint = "the spec's recipe or args do not describe these weights."
    expected, buffers = _recipe_table(recipe, args, dtype, budget=budget)
    _compare_tables(
        spec["tensors"], expected, f"checkpoint {weights_path}",
        f"recipe {recipe!r} with the saved args", any_shape=buffers, hint=hint,
    )
    _check_binding(spec, metadata, weights_path)
    try:
        tensors = parse_safetensors(data)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"weights file {weights_path} is corrupted: {err}") from err
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"tensor {name!r} in {weights_path} holds NaN or Inf values.")
    model = _rebuild(recipe, args, dtype)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # a buffer whose shape the module does not adopt
        raise CheckpointError(f"checkpoint {weights_path} does not fit its recipe: {err}; "
                              f"{hint}") from err
    return model.to(target).eval()


def _check_device(map_location: str | torch.device | None) -> torch.device:
    try:
        device = torch.device(map_location or "cpu")
    except (RuntimeError, TypeError) as err:
        raise BadInputError(f"map_location {map_location!r} is not a device ({err}).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"map_location {map_location!r}: CUDA is not available on this "
                            "machine; load with map_location='cpu'.")
    if device.type == "cuda" and device.index is not None and (
            device.index >= torch.cuda.device_count()):
        raise BadInputError(f"map_location {map_location!r}: this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s).")
    return device


RUN_WEIGHTS = "model.safetensors"
"""The checkpoint inside a run folder of ``lipcert train``."""


def _weights_path(path: str | Path) -> Path:
    """The weights file ``path`` names: itself, or ``model.safetensors`` in a run folder."""
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_WEIGHTS).is_file():
            raise CheckpointError(f"checkpoint {path} is a folder without {RUN_WEIGHTS}; pass "
                                  "the .safetensors file written by lipcert.models.save.")
        return path / RUN_WEIGHTS
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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_json(raw: bytes, what: str) -> Any:
    """JSON from ``raw``; CheckpointError for bad UTF-8 or JSON, NaN/Infinity, deep nesting."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{what} is not UTF-8 text: {err}") from err
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{what} is not valid JSON: {err}"[:400]) from None


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


class _TooLarge(Exception):
    pass


_NEW_METHODS = (torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
                torch.Tensor.new_full)
_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn,
                        torch.full, torch.eye, *_NEW_METHODS})


def _requested_numel(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements a factory call (one of ``_FACTORIES``) asks for, before it allocates."""
    if func in _NEW_METHODS:
        args = args[1:]  # the tensor the method is called on
    if func is torch.eye:
        rows = int(args[0]) if args else int(kwargs.get("n", 0))
        cols = int(args[1]) if len(args) > 1 and not isinstance(args[1], torch.dtype) else \
            int(kwargs.get("m", rows))
        return rows * cols
    if "size" in kwargs:
        size = kwargs["size"]
    elif func in (torch.full, torch.Tensor.new_full) or (args and not _is_int(args[0])):
        size = args[0] if args else ()
    else:
        size = args  # sizes given one by one: torch.zeros(3, 4)
    return math.prod(int(n) for n in size)


class _AllocationCap(TorchFunctionMode):
    """Refuses any factory call asking for more than ``cap`` elements, and stops once the
    tensors created add up to more than ``total`` elements (checked after each call)."""

    def __init__(self, cap: int, total: int) -> None:
        super().__init__()
        self.cap, self.total, self.created = cap, total, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            numel = _requested_numel(func, args, kwargs)
            if numel > self.cap:
                raise _TooLarge(numel)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            self.created += out.numel()
            if self.created > self.total:
                raise _TooLarge(self.created)
        return out


def _recipe_table(
    recipe: str, args: Mapping[str, Any], dtype: torch.dtype, budget: int | None
) -> tuple[TensorTable, frozenset[str]]:
    """The tensor table and buffer names of a fresh ``recipe`` model, built on the ``meta``
    device (no memory); a recipe that reads values while being built is built for real, with
    every allocation capped by ``budget`` (the elements in the weights; None: no cap)."""
    try:
        with torch.device("meta"):
            model = build(recipe, seed=0, **args).to(dtype)
    except BadInputError as err:
        raise CheckpointError(
            f"recipe {recipe!r} with args {dict(args)} cannot be rebuilt (spec fields 'recipe' "
            f"and 'args'): {err}"
        ) from err
    except (RuntimeError, NotImplementedError):  # e.g. .item() on a meta tensor
        if budget is None:
            model = _rebuild(recipe, args, dtype)
        else:
            try:
                with _AllocationCap(4 * budget + 2**16, 64 * budget + 2**22):
                    model = _rebuild(recipe, args, dtype)
            except _TooLarge as err:
                raise CheckpointError(
                    f"recipe {recipe!r} with args {dict(args)} would allocate {err.args[0]} "
                    f"elements, far more than the {budget} the weights hold: the spec's recipe "
                    "or args do not describe these weights."
                ) from None
    buffers = frozenset(name for name, _ in model.named_buffers())
    return _tensor_table(model.state_dict()), buffers


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


def _read_header(
    data: bytes, weights_path: Path, expected_bytes: int
) -> tuple[TensorTable, dict[str, Any]]:
    """The tensor table and metadata of a safetensors file, from its header alone."""
    def corrupted(reason: str) -> CheckpointError:
        if len(data) < expected_bytes:
            return CheckpointError(
                f"weights file {weights_path} is truncated: {len(data)} bytes, its spec field "
                f"weights.bytes says {expected_bytes} ({reason})."
            )
        return CheckpointError(
            f"weights file {weights_path} is corrupted ({len(data)} bytes; its spec field "
            f"weights.bytes says {expected_bytes}): {reason}"
        )

    if len(data) < 8:
        raise corrupted("no safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_HEADER_BYTES):
        raise corrupted(f"the header claims {size} bytes")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise corrupted(f"the header is not JSON ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise corrupted("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise corrupted("the header's __metadata__ is not an object")
    table: TensorTable = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _HEADER_DTYPES \
                or not _is_shape(entry.get("shape")):
            raise corrupted(f"the header entry of tensor {name!r} is malformed")
        table[name] = {"shape": entry["shape"], "dtype": _HEADER_DTYPES[entry["dtype"]]}
    return table, metadata


def _check_binding(spec: Mapping[str, Any], metadata: Mapping[str, Any], where: Path) -> None:
    """The recipe (format 1) or recipe, args and dtype (format 2) recorded inside the weights
    must be those of the spec."""
    hint = ("the spec's recipe, args or dtype were edited, or the spec belongs to other "
            "weights; a checkpoint's recipe is bound to its weights.")
    recorded = metadata.get("lipcert_recipe")
    if recorded != spec["recipe"]:
        raise CheckpointError(
            f"weights file {where} was saved for recipe {recorded!r}, but its spec says "
            f"{spec['recipe']!r}: {hint}"
        )
    if spec["format_version"] < 2:
        return
    identity = {key: spec[key] for key in ("recipe", "args", "dtype")}
    if metadata.get("lipcert_spec") != _canonical(identity):
        raise CheckpointError(
            f"weights file {where} was saved for {metadata.get('lipcert_spec')!r}, but its "
            f"spec says {_canonical(identity)}: {hint}"
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
_WEIGHTS_FIELDS = ("file", "bytes", "sha256")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 64 and all(
        _is_int(n) and 0 <= n <= 2**63 for n in value)


def _check_spec_fields(spec: Any, where: Path) -> None:
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint spec {where} must hold a JSON object.")
    for field, kind in _SPEC_FIELDS.items():
        if field not in spec:
            raise CheckpointError(f"checkpoint spec {where} lacks the field {field!r}.")
        if not isinstance(spec[field], kind) or isinstance(spec[field], bool):
            raise CheckpointError(
                f"field {field!r} of checkpoint spec {where} has the wrong type "
                f"({type(spec[field]).__name__})."
            )
    unknown = sorted(set(spec) - set(_SPEC_FIELDS))
    if unknown:
        raise CheckpointError(
            f"checkpoint spec {where} has unknown field(s) {unknown}; it holds exactly "
            f"{list(_SPEC_FIELDS)}."
        )
    if spec["format"] != FORMAT:
        raise CheckpointError(f"field 'format' of {where} is {spec['format']!r}, not {FORMAT!r}.")
    if spec["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format_version {spec['format_version']}, newer than this lipcert "
            f"({lipcert.__version__}) reads ({FORMAT_VERSION}); upgrade lipcert."
        )
    if spec["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(
            f"field 'format_version' of {where} is {spec['format_version']}; this lipcert "
            f"reads {list(READABLE_VERSIONS)}."
        )
    if spec["dtype"] not in FLOAT_DTYPES:
        raise CheckpointError(
            f"field 'dtype' of {where} is {spec['dtype']!r}; a checkpoint's floating-point "
            f"tensors are one of {list(FLOAT_DTYPES)}."
        )
    _check_args(spec["recipe"], spec["args"], where)
    weights = spec["weights"]
    if set(weights) != set(_WEIGHTS_FIELDS) or not isinstance(weights["file"], str) \
            or not _is_int(weights["bytes"]) or weights["bytes"] < 0 \
            or not isinstance(weights["sha256"], str) or not _SHA256.fullmatch(weights["sha256"]):
        raise CheckpointError(
            f"field 'weights' of {where} needs exactly a string 'file', an integer 'bytes' and "
            "a string 'sha256' (64 hex digits)."
        )
    for name, entry in spec["tensors"].items():
        if (
            not isinstance(entry, dict)
            or set(entry) != {"shape", "dtype"}
            or not _is_shape(entry["shape"])
            or not isinstance(entry["dtype"], str)
            or entry["dtype"] not in _TENSOR_DTYPES
        ):
            raise CheckpointError(
                f"entry {name!r} of field 'tensors' in {where} needs exactly a 'shape' (list of "
                "non-negative integers) and a 'dtype' (a tensor dtype name)."
            )


def _check_args(recipe: str, args: dict[str, Any], where: Path) -> None:
    """Every argument of the recipe, each a positive integer, and nothing else."""
    try:
        get_recipe(recipe)
        if "seed" in args:
            raise BadInputError(
                "'seed' is not a recipe argument (a checkpoint restores weights, it does not "
                "draw them)"
            )
        resolved = resolve_args(recipe, args)
    except BadInputError as err:
        raise CheckpointError(f"field 'recipe' or 'args' of {where}: {err}") from None
    missing = sorted(set(resolved) - set(args))
    if missing:
        raise CheckpointError(f"field 'args' of {where} lacks {missing}; save writes them all.")
    for key, value in args.items():
        if isinstance(value, int) and value > MAX_ARG:  # strings: checked by the recipe
            raise CheckpointError(f"field 'args' of {where}: {key} = {value} is too large.")


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
