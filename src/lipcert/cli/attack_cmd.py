"""``lipcert attack CHECKPOINT`` (robust accuracy table); :func:`load_model_and_data` also
serves ``lipcert audit``."""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import nn

from lipcert.cli._common import (
    FIGURE_SUFFIXES,
    add_data_flags,
    check_int,
    check_output_file,
    check_radii,
    checkpoint_file,
    resolve_device,
    write_results,
)
from lipcert.errors import BadInputError
from lipcert.report import format_table

NORMS = {"2": 2.0, "inf": math.inf}
ATTACKS = ("pgd", "fgsm", "autoattack", "deepfool", "cw")
BALL_ATTACKS = ("pgd", "fgsm", "autoattack")


def register(subparsers) -> None:
    attack = subparsers.add_parser(
        "attack", help="robust accuracy of a checkpoint under PGD, FGSM, AutoAttack, DeepFool "
        "or Carlini-Wagner",
        description="Attack a saved model on a data set and print its accuracy under attack at "
        "each radius (an upper bound on the true robust accuracy).",
    )
    add_data_flags(attack)
    attack.add_argument("--eps", type=float, nargs="+", required=True, metavar="EPS",
                        help="attack radii (one or more, >= 0)")
    attack.add_argument("--norm", choices=sorted(NORMS), default="2", help="threat model "
                        "(default 2; pgd, fgsm and autoattack take 2 or inf, deepfool and cw "
                        "are l2 attacks)")
    attack.add_argument("--attack", choices=ATTACKS, default="pgd",
                        help="attack (default pgd; autoattack is the standard AutoAttack "
                        "ensemble, arXiv 2003.01690, and needs pip install 'lipcert[autoattack]')")
    attack.add_argument("--steps", type=int, default=50, metavar="N",
                        help="iterations of pgd, deepfool and cw (default 50; fgsm takes one "
                        "step, autoattack runs its own fixed budget)")
    attack.add_argument("--restarts", type=int, default=1, metavar="N",
                        help="PGD random restarts (default 1)")
    attack.add_argument("--loss", choices=("margin", "ce"), default="margin",
                        help="loss of pgd and fgsm (default margin: stronger on Lipschitz "
                        "networks)")
    attack.add_argument("--eot", type=int, default=1, metavar="K",
                        help="noise draws averaged per attack step, for randomized models "
                        "(NoiseInjection; expectation over transformation, arXiv 1802.00420); "
                        "with autoattack any K > 1 selects its 'rand' version (20 draws)")
    attack.add_argument("--votes", type=int, default=1, metavar="M",
                        help="each prediction is the majority over M forward passes (fresh "
                        "noise in each for a randomized model; default 1)")
    attack.add_argument("--seed", type=int, default=0, help="seed of the random starts "
                        "(default 0)")
    attack.set_defaults(func=run_attack)


def load_model_and_data(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The checkpoint's model (eval mode, input normalization prepended) and the data on the
    requested device, inputs in [0, 1]. Checks the common flags first, and that the data's
    image shape is the one the checkpoint was built for."""
    from lipcert import data, models
    from lipcert.cli.bound_cmd import load_checkpoint, spec_input_shape

    check_int(args, "limit", 1)
    check_int(args, "batch_size", 1)
    check_output_file(args.json, "json")
    check_output_file(getattr(args, "plot", None), "plot", FIGURE_SUFFIXES)
    device = resolve_device(args.device)
    path = checkpoint_file(args.checkpoint)
    spec = ({"recipe": f"factory {args.factory}"} if args.factory else models.read_spec(path))
    name = args.data or spec.get("dataset")
    if not name:
        raise BadInputError(f"{path} names no data set; pass --data NAME.")
    expected, shape = spec_input_shape(spec), tuple(data.info(name).shape)
    if expected is not None and shape != expected:
        trained = f", trained on {spec['dataset']}" if spec.get("dataset") else ""
        raise BadInputError(
            f"data set {name} has images of shape {_dims(shape)}, but checkpoint {path} "
            f"({spec.get('recipe')}{trained}) takes {_dims(expected)}; pass --data with a data "
            "set of that shape (see `lipcert data list`)."
        )
    model, _ = load_checkpoint(path, device, args.dtype, args.factory, args.factory_args)
    x, y = data.load(name, args.split, root=args.root).tensors
    classes = int(y.unique().numel())
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
        kept = int(y.unique().numel())
        if kept < classes and len(y) >= classes:
            print(f"note: the first {len(y)} {args.split} points of {name} hold only {kept} of "
                  f"its {classes} classes (the set is ordered by label); the numbers below are "
                  "not representative. Raise --limit.", file=sys.stderr)
    args.checkpoint, args.data_name, args.recipe = path, name, spec.get("recipe")
    dtype = next(model.parameters()).dtype
    print(f"{path} ({spec['recipe']}) on {name} {args.split}: {len(y)} points, "
          f"device {device}")
    return model, x.to(device=device, dtype=dtype), y.to(device)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def attack_budget(args: argparse.Namespace) -> str:
    """The attack's budget in words, for the line above the table."""
    randomized = f", EOT {args.eot}, {args.votes} vote(s)" if args.eot > 1 or args.votes > 1 \
        else ""
    if args.attack == "pgd":
        return f"{args.steps} steps, {args.restarts} restart(s), {args.loss} loss{randomized}"
    if args.attack == "fgsm":
        return f"one step, {args.loss} loss{randomized}"
    if args.attack == "autoattack":
        version = "rand: APGD-CE, APGD-DLR, EOT 20" if args.eot > 1 else \
            "standard: APGD-CE, APGD-T, FAB-T, Square 5000 queries"
        return version + (f", {args.votes} vote(s)" if args.votes > 1 else "")
    return f"at most {args.steps} iterations{randomized}"


def run_attack(args: argparse.Namespace) -> int:
    from lipcert.attacks import robust_accuracy

    check_radii(args.eps)
    check_int(args, "steps", 1)  # 0 steps would report the clean accuracy as robust
    check_int(args, "restarts", 1)
    check_int(args, "eot", 1)
    check_int(args, "votes", 1)
    if args.attack not in BALL_ATTACKS and args.norm != "2":
        raise BadInputError(f"--attack {args.attack} is an l2 attack; use --norm 2 with it, or "
                            f"--attack pgd for --norm {args.norm}.")
    model, x, y = load_model_and_data(args)
    result = robust_accuracy(
        model, (x, y), args.eps, norm=NORMS[args.norm], attack=args.attack,
        batch_size=args.batch_size, progress=args.progress, steps=args.steps,
        restarts=args.restarts, loss=args.loss, seed=args.seed, eot=args.eot, votes=args.votes,
    )
    print(f"clean accuracy {result['clean_accuracy']:.4f}; attack {args.attack}, "
          f"{attack_budget(args)}")
    rows = [[f"l{args.norm}", row["eps"], f"{row['robust_accuracy']:.4f}"]
            for row in result["results"]]
    print(format_table(rows, ["norm", "eps", "robust accuracy"], args.table))
    if args.json:
        write_results(args, {"checkpoint": args.checkpoint, **result})
    return 0
