"""``lipcert bound CHECKPOINT``: per-layer Lipschitz table, upper bound and a lower bound."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from lipcert.cli._common import (
    DEVICE_HELP,
    DTYPES,
    add_dtype_flag,
    add_factory_flags,
    add_json_flag,
    check_int,
    check_output_file,
    checkpoint_file,
    resolve_device,
    write_results,
)
from lipcert.errors import BadInputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bound", help="l2 Lipschitz bounds of a checkpoint: per-layer table, upper and lower",
        description="Trace the saved model with torch.fx, print the per-layer Lipschitz rules "
        "and their running product, the upper bound, and a lower bound found by gradient "
        "ascent on ||J(x) v|| (the true constant lies between them).",
    )
    parser.add_argument("checkpoint", help="model.safetensors saved by lipcert (JSON spec "
                        "beside it), or the run folder holding it")
    parser.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                        help="shape of one input, e.g. 1 28 28 (default: from the checkpoint)")
    add_dtype_flag(parser)
    add_factory_flags(parser)
    add_json_flag(parser)
    parser.add_argument("--lower-steps", type=int, default=50, metavar="N",
                        help="ascent steps of the lower bound (default 50; 0 to skip it)")
    parser.add_argument("--lower-starts", type=int, default=8, metavar="N",
                        help="random starting inputs in [0, 1] for the lower bound (default 8)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the lower-bound search (default 0)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP.format(default="auto"))
    parser.set_defaults(func=run_bound)


def load_checkpoint(path: str, device: str | torch.device = "cpu", dtype: str | None = None,
                    factory: str | None = None,
                    factory_args: str | None = None) -> tuple[nn.Module, dict]:
    """The checkpoint's model in eval mode, with its input normalization (if the spec names
    one) prepended as :class:`lipcert.bounds.Normalize`, in ``dtype`` (a name of
    :data:`DTYPES`; None keeps the checkpoint's), and its spec. With ``factory``
    (``--factory``), the model is the factory's and ``path`` holds its state_dict; its spec
    only names the factory."""
    from lipcert import models
    from lipcert.bounds import Normalize

    if factory is not None:
        from lipcert.models.factory import build_from_factory, load_weights, parse_factory_args

        model = build_from_factory(factory, parse_factory_args(factory_args))
        load_weights(model, path)
        if dtype is not None:
            model = model.to(DTYPES[dtype])
        return model.to(device).eval(), {"recipe": f"factory {factory}"}
    spec = models.read_spec(path)
    model = models.load(path, map_location=device)
    if spec.get("normalization"):
        norm = spec["normalization"]
        model = nn.Sequential(Normalize(norm["mean"], norm["std"]), model)
    if dtype is not None:
        model = model.to(DTYPES[dtype])
    return model.to(device).eval(), spec


def spec_input_shape(spec: dict) -> tuple[int, ...] | None:
    """(C, H, W) the checkpoint's recipe was built for, or None if its spec does not say."""
    args = spec.get("args") or {}
    if "in_channels" in args and "image_size" in args:
        return (args["in_channels"], args["image_size"], args["image_size"])
    return None


def input_shape_of(spec: dict, given: list[int] | None) -> tuple[int, ...]:
    """Shape of one input: ``given``, else the recipe's ``in_channels`` and ``image_size``."""
    if given:
        if any(n < 1 for n in given):
            sizes = " ".join(map(str, given))
            raise BadInputError(f"--input-shape takes positive sizes, got {sizes}.")
        return tuple(given)
    shape = spec_input_shape(spec)
    if shape is None:
        raise BadInputError("the checkpoint's spec does not give the input shape; pass "
                            "--input-shape C H W.")
    return shape


def run_bound(args: argparse.Namespace) -> int:
    from lipcert.bounds import lipschitz_bound, lipschitz_lower_bound
    from lipcert.cli import error_text
    from lipcert.errors import LipcertError
    from lipcert.report import STDOUT, format_table

    check_int(args, "lower_steps", 0)
    check_int(args, "lower_starts", 1)
    check_output_file(args.json, "json")
    device = resolve_device(args.device)
    path = checkpoint_file(args.checkpoint)
    model, spec = load_checkpoint(path, device, args.dtype, args.factory, args.factory_args)
    shape = input_shape_of(spec, args.input_shape)
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(args.seed)
    starts = torch.rand(args.lower_starts, *shape, generator=generator, dtype=dtype)
    starts = starts.to(device)
    try:
        with torch.no_grad():
            model(starts[:1])
    except (RuntimeError, LipcertError) as err:
        built = spec_input_shape(spec)
        hint = (f"; the checkpoint was built for {'x'.join(map(str, built))}"
                if built else "") + " (see --input-shape)"
        reason = error_text(err).rstrip(".")
        raise BadInputError(f"the model does not take inputs of shape "
                            f"{'x'.join(map(str, shape))}: {reason}{hint}.") from err
    began = time.perf_counter()
    report = lipschitz_bound(model, starts[:1])
    upper_seconds = time.perf_counter() - began
    lower = None
    if args.lower_steps > 0:
        if args.json != STDOUT:
            print(f"searching a lower bound: {args.lower_starts} starts x {args.lower_steps} "
                  "ascent steps ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        lower = lipschitz_lower_bound(model, starts, steps=args.lower_steps, seed=args.seed)
        lower_seconds = time.perf_counter() - began
    if args.json:
        write_results(args, {"checkpoint": path, "recipe": spec.get("recipe"),
                             "input_shape": list(shape), **report.to_dict(),
                             "lower_bound": lower, "upper_seconds": upper_seconds})
        if args.json == STDOUT:
            return 0
    print(f"{path} ({spec.get('recipe')}), input shape {shape}")
    print(report)
    rows = [["upper", float(report), report.guarantee, f"{upper_seconds:.3f}"]]
    if lower is not None:
        rows.append(["lower", float(lower), f"{lower.guarantee} (attained, {lower.method})",
                     f"{lower_seconds:.3f}"])
        rows.append(["upper / lower", float(report) / lower if lower > 0 else float("inf"), "",
                     ""])
    print()
    print(format_table(rows, ["bound", "value", "guarantee", "seconds"], args.table))
    return 0
