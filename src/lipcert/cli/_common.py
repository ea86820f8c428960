"""Helpers shared by the sub-commands: the common flags, argument checks that run before any
heavy work, device and checkpoint-path resolution.

Range checks raise :class:`lipcert.errors.BadInputError` (``lipcert: error: ...``, exit
status 1) and name the flag; malformed values (``--eps abc``) are argparse's (exit status 2).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from lipcert.errors import BadInputError
from lipcert.models.checkpoint import RUN_WEIGHTS
from lipcert.report import STDOUT

DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda or cuda:N (default {default})"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
WEIGHTS_FILE = RUN_WEIGHTS


def add_data_flags(parser: argparse.ArgumentParser, *, batch_size: int = 256) -> None:
    """--data, --split, --root, --limit, --batch-size, --device, --json, --no-progress."""
    from lipcert.data.registry import SPLITS

    parser.add_argument("checkpoint", help="model.safetensors saved by lipcert (JSON spec "
                        "beside it), or the run folder holding it")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="data set (see `lipcert data list`; default: the checkpoint's)")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="which split to evaluate (default test)")
    parser.add_argument("--root", default=None, metavar="FOLDER",
                        help="folder with the original files (local data sets only)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use only the first N points of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                        help=f"points per batch (default {batch_size})")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP.format(default="auto"))
    add_dtype_flag(parser)
    add_factory_flags(parser)
    add_json_flag(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_factory_flags(parser: argparse.ArgumentParser) -> None:
    """``--factory package.module:function`` and ``--factory-args JSON``: a user's own model,
    whose weights (a safetensors state_dict) are the checkpoint argument."""
    parser.add_argument("--factory", default=None, metavar="MODULE:FUNCTION",
                        help="build the model by calling this function (your own nn.Module); "
                        "the checkpoint is then its state_dict as .safetensors")
    parser.add_argument("--factory-args", default=None, metavar="JSON",
                        help="keyword arguments of --factory as a JSON object")


def add_dtype_flag(parser: argparse.ArgumentParser) -> None:
    """``--dtype {float32,float64}``: the precision the model and the data are run in."""
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="run the model and the data in this precision (default: the "
                        "checkpoint's); float64 leaves less to float rounding in certificates")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json [FILE]``: the results as JSON in FILE; alone or with ``-``, on standard output
    (every other message then goes to standard error)."""
    parser.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="FILE",
                        help="write the results as JSON to FILE; `--json` alone or `--json -` "
                        "prints them on standard output and the messages on standard error")


def add_plot_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help=f"write {what} to FILE (.png, .pdf or .svg; - for a PNG on "
                        "standard output)")


def add_table_flag(parser: argparse.ArgumentParser) -> None:
    """``--table {text,md,csv,latex}``: how the command prints its tables."""
    from lipcert.report import TABLE_STYLES

    parser.add_argument("--table", default="text", choices=TABLE_STYLES,
                        help="print tables as aligned text (default), Markdown, CSV or a LaTeX "
                        "tabular to paste into a paper")


def run_metadata(args: argparse.Namespace) -> dict:
    """What a results JSON records about the run that made it: the command and every
    argument (data set, split, count, attack settings, seed...), thread count and versions."""
    import lipcert

    arguments = {key: value for key, value in vars(args).items()
                 if key != "func" and (value is None or isinstance(value, (str, int, float, bool))
                                       or (isinstance(value, list) and all(
                                           isinstance(v, (str, int, float)) for v in value)))}
    return {"command": getattr(args, "command", None), "arguments": arguments,
            "threads": torch.get_num_threads(), "lipcert": lipcert.__version__,
            "torch": torch.__version__}


def write_results(args: argparse.Namespace, payload: dict) -> None:
    """Write ``payload`` plus :func:`run_metadata` (under ``"run"``) to ``--json``; says where
    unless that is standard output."""
    from lipcert.report import write_json

    write_json(args.json, {**payload, "run": run_metadata(args)})
    if args.json != STDOUT:
        print(f"wrote {args.json}")


def run_title(args: argparse.Namespace, what: str, points: int) -> str:
    """A figure title naming the run: recipe, run folder, data set, split and point count
    (after :func:`lipcert.cli.attack_cmd.load_model_and_data` filled them in)."""
    path = Path(args.checkpoint)
    run = path.parent.name if path.name == WEIGHTS_FILE and path.parent.name else path.stem
    return f"{args.recipe} ({run}): {what} on {args.data_name} {args.split}, {points} points"


def writes_to_stdout(args: argparse.Namespace) -> bool:
    """True if an output flag (``--json``, ``--plot``, ``--out``) of ``args`` is ``-``."""
    return any(getattr(args, name, None) == STDOUT for name in ("json", "plot", "out"))


def check_int(args: argparse.Namespace, name: str, minimum: int) -> None:
    """``args.<name>`` (if not None) must be an integer >= ``minimum``."""
    value = getattr(args, name, None)
    if value is not None and value < minimum:
        raise BadInputError(f"{flag(name)} must be >= {minimum}, got {value}.")


def check_radii(values: Iterable[float] | None, name: str = "eps") -> None:
    """Radii must be finite and >= 0 (l2 or l-inf distances in input space)."""
    for value in values or ():
        if not math.isfinite(value) or value < 0:
            raise BadInputError(
                f"{flag(name)} takes finite radii >= 0 (distances between inputs in [0, 1]), "
                f"got {value:g}."
            )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve_device(name: str | None) -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else must name a usable device."""
    name = (name or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInputError(
            f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(
                f"--device {name} was requested but no CUDA GPU is available; use --device cpu "
                "(or auto)."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadInputError(f"--device {name}: this machine has {count} CUDA device(s), "
                                f"numbered 0 to {count - 1}.")
    elif device.type not in ("cpu", "mps"):
        raise BadInputError(f"unsupported --device {name!r}; use auto, cpu, cuda or cuda:N.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"--device {name} was requested but MPS is not available; use cpu.")
    return device


def checkpoint_file(path: str) -> str:
    """The ``.safetensors`` file the user means by ``path``: the file itself, the weights
    beside a ``.json`` spec, or ``model.safetensors`` inside a run folder."""
    given = Path(path)
    if given.is_dir():
        inside = given / WEIGHTS_FILE
        if inside.is_file():
            return str(inside)
        found = sorted(p.name for p in given.glob("*.safetensors")
                       if not p.name.startswith("train_state"))
        hint = (f"; it holds {', '.join(found)}: pass one of them" if found else
                "; pass the .safetensors file written by `lipcert train` or lipcert.models.save")
        raise BadInputError(f"checkpoint {path} is a folder without {WEIGHTS_FILE}{hint}.")
    if given.suffix == ".json":
        raise BadInputError(f"{path} is a checkpoint's JSON spec; pass its weights file "
                            f"{given.with_suffix('.safetensors')} instead.")
    if not given.exists():
        where = (f"folder {given.parent} does not exist" if not given.parent.is_dir() else
                 "no such file or folder")
        raise BadInputError(f"checkpoint {path}: {where}; pass a run folder (holding "
                            f"{WEIGHTS_FILE}) or the .safetensors file written by `lipcert "
                            "train` or lipcert.models.save.")
    return path


def check_output_file(path: str | None, name: str,
                      suffixes: tuple[str, ...] | None = None) -> None:
    """Fail early (before minutes of work) if ``path`` cannot be an output file: a folder,
    a wrong suffix, or a folder where nothing can be written (missing folders are created).
    ``-`` (standard output) and existing devices or FIFOs are accepted as they are."""
    if path is None or path == STDOUT:
        return
    target = Path(path)
    if target.exists() and not target.is_dir() and not target.is_file():
        return  # a device or FIFO: written in place (see lipcert.report.atomic_write_bytes)
    if target.is_dir():
        example = target / ("out" + (suffixes[0] if suffixes else ".json"))
        raise BadInputError(f"{flag(name)} {path} is a folder; give a file name such as "
                            f"{example}.")
    if suffixes and target.suffix.lower() not in suffixes:
        choices = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else (
            suffixes[0])
        raise BadInputError(f"{flag(name)} {path}: the file name must end in {choices} (the "
                            "suffix sets the format).")
    _check_writable_folder(target.parent, f"{flag(name)} {path}")


def check_output_folder(path: str | None, name: str = "out") -> None:
    """An output folder must be a folder, or creatable (it is created here), and writable."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BadInputError(f"{flag(name)} {path} is a file, not a folder; choose a folder "
                            "(it is created if missing).")
    _check_writable_folder(target, f"{flag(name)} {path}")


def _check_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check that a file can be created in it."""
    folder = folder if str(folder) else Path(".")
    blocking = [p for p in reversed([folder, *folder.parents]) if p.exists() and not p.is_dir()]
    if blocking:
        raise BadInputError(f"{what}: {blocking[0]} is a file, so no folder can be created "
                            "under it.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise BadInputError(f"{what}: cannot write in folder {folder} "
                            f"({err.strerror or err}); choose another path.") from None
