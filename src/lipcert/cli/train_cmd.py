"""``lipcert train`` (a :class:`lipcert.train.TrainConfig` from flags or TOML), ``lipcert demo``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from lipcert.cli._common import (
    DEVICE_HELP,
    add_factory_flags,
    check_int,
    check_output_folder,
    resolve_device,
)
from lipcert.errors import BadInputError
from lipcert.models.registry import RECIPES
from lipcert.report import format_table

# Flags of `lipcert train`: (TrainConfig field, type, help). Defaults come from TrainConfig,
# so a flag left out keeps the value of --config FILE (or the dataclass default).
TRAIN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("model", str, "model recipe: " + ", ".join(RECIPES)),
    ("data", str, "data set (see `lipcert data list`), e.g. mnist-5k, digits"),
    ("data_root", str, "folder with the original files of a local data set"),
    ("loss", str, "ce, margin-ce, lmt, lmt++, hinge or hkr"),
    ("eps", float, "target l2 radius (images in [0, 1]) for the loss and the report"),
    ("epochs", int, "number of epochs"),
    ("batch_size", int, "global batch size (split over torchrun processes)"),
    ("lr", float, "peak learning rate"),
    ("weight_decay", float, "weight decay"),
    ("optimizer", str, "adam, adamw, sgd or schedulefree (pip install schedulefree)"),
    ("schedule", str, "triangular, cosine or constant (per batch)"),
    ("seed", int, "seed of the initialization and of the data order"),
    ("width", int, "override the recipe's width"),
    ("depth", int, "override the recipe's depth"),
    ("offset", float, "margin-ce logit offset (default 2 sqrt(2) * eps: the margin for radius 2 "
     "eps, chosen on a validation split)"),
    ("temperature", float, "margin-ce temperature"),
    ("margin", float, "hinge margin (default 2 sqrt(2) * eps, like the offset) / hkr margin "
     "(default sqrt(2) * eps)"),
    ("alpha", float, "hkr weight of the hinge term, in [0, 1]"),
    ("ramp_epochs", int, "LMT: ramp eps up over this many epochs"),
    ("penalty", float, "weight of the Lipschitz penalty added to the loss"),
    ("penalty_method", str, "gram or toeplitz bound for the penalty"),
    ("device", str, "auto, cpu, cuda or cuda:N"),
    ("out", str, "run folder (log.jsonl, training state, model.safetensors)"),
    ("stop_after", int, "stop after this many epochs (the schedule still spans --epochs)"),
    ("noise", str, "LAW:SIGMA, e.g. gaussian:0.25: train on noisy inputs (fresh noise per "
     "sample and step) for randomized smoothing (`lipcert smooth`)"),
    ("adversarial", str, "adversarial training: pgd-linf:EPS, pgd-l2:EPS, mat-rand or mat-max "
     "(10 PGD steps of eps/5, random start); with --noise-layer this is RAT"),
    ("augment", str, "data augmentation on the device: crop (crop:P pads by P, default 2), "
     "flip, or crop,flip (no flip for digits)"),
    ("val_fraction", float, "hold out this fraction of each class of the training split and "
     "evaluate on it every epoch (choose settings there, never on the test split)"),
    ("eval_every", int, "evaluate and certify every K epochs (and after the last); the "
     "network bound costs time on large models"),
    ("noise_layer", str, "LAW:SIGMA, e.g. gaussian:0.25: a NoiseInjection layer (fresh noise at "
     "every forward, training and inference) where the recipe puts it (cnn-s: the input)"),
)

# Same names as the other commands: --root, and the same placeholders in --help.
ALIASES = {"data_root": ("--root",)}
METAVARS = {"model": "RECIPE", "data": "NAME", "data_root": "FOLDER", "out": "FOLDER",
            "epochs": "N", "batch_size": "N", "width": "N", "depth": "N", "ramp_epochs": "N",
            "stop_after": "N", "penalty_method": "METHOD", "noise": "LAW:SIGMA",
            "adversarial": "SPEC", "noise_layer": "LAW:SIGMA", "augment": "LIST",
            "val_fraction": "F", "eval_every": "K"}


def register(subparsers) -> None:
    from lipcert.train import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser = subparsers.add_parser(
        "train", help="train a certifiably robust model",
        description="Train a model recipe with a margin loss; prints a progress bar per epoch "
        "(loss, accuracy, certified accuracy at --eps, Lipschitz bound), writes log.jsonl and "
        "a checkpoint every epoch. Data-parallel under `torchrun --nproc_per_node=N`.",
    )
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="TOML file of TrainConfig settings; flags given on the command "
                        "line win")
    for name, kind, text in TRAIN_FLAGS:
        default = defaults[name]
        shown = "" if default is None or "default" in text else f" (default {default})"
        names = [f"--{name.replace('_', '-')}", *ALIASES.get(name, ())]
        parser.add_argument(*names, dest=name, type=kind, metavar=METAVARS.get(name),
                            default=argparse.SUPPRESS, help=text + shown)
    parser.add_argument("--resume", action="store_true", default=argparse.SUPPRESS,
                        help="continue the run in --out from its last checkpoint")
    add_factory_flags(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the training run already in --out (without it, lipcert "
                        "refuses to overwrite one)")
    parser.add_argument("--tensorboard", action="store_true", default=argparse.SUPPRESS,
                        help="also log every epoch for TensorBoard in OUT/tensorboard (pip "
                        "install tensorboard); log.jsonl is always written")
    parser.add_argument("--normalize", action="store_true", default=argparse.SUPPRESS,
                        help="put a per-channel mean/std normalization inside the model, "
                        "fitted on the training images: the model still takes images in "
                        "[0, 1], so certificates stay in input units. Its bound includes "
                        "1 / min std (about 3 on MNIST): margin-ce's offset is in logit units, "
                        "so a 1-Lipschitz recipe certifies radii about 3x smaller; the lmt "
                        "losses account for it")
    parser.add_argument("--no-certify", dest="certify", action="store_false",
                        default=argparse.SUPPRESS, help="skip certified accuracy (any model)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        default=argparse.SUPPRESS, help="no progress bar")
    parser.set_defaults(func=run_train)

    demo = subparsers.add_parser(
        "demo", help="train and certify a small 1-Lipschitz network (under a minute idle)",
        description="Train the sll-m recipe on the embedded mnist-5k, print the Lipschitz "
        "bracket [lower, upper] and the certified accuracy at l2 radii 0.5, 1.0, 1.58, and "
        "write the certified-accuracy curve as a PNG.",
    )
    demo.add_argument("--out", default="demo-out", metavar="FOLDER",
                      help="output folder (default demo-out)")
    demo.add_argument("--epochs", type=int, default=None, metavar="N",
                      help="epochs (default 25; 1 with --quick)")
    demo.add_argument("--quick", action="store_true",
                      help="a seconds-long smoke run (narrow network, 512 training images)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the initialization and of the data order (default 0)")
    demo.add_argument("--device", default="auto", help=DEVICE_HELP.format(default="auto"))
    demo.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar")
    demo.set_defaults(func=run_demo_command)


def run_train(args: argparse.Namespace) -> int:
    from lipcert.train import TrainConfig, train_from_config
    from lipcert.train.distributed import current_world

    settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = (TrainConfig.from_toml(args.config, **settings) if args.config
              else TrainConfig.from_dict(settings, where="the command line"))
    check_run_folder(config.out, config.device, config.resume, args.overwrite)
    model = None
    if args.factory is not None:
        import torch

        from lipcert.models.factory import build_from_factory, parse_factory_args

        torch.manual_seed(config.seed)
        model = build_from_factory(args.factory, parse_factory_args(args.factory_args))
    result = train_from_config(config, model=model)
    if not current_world().is_main or not result.history:
        return 0
    last = result.history[-1]
    rows = [["test accuracy", last["test_accuracy"]]]
    if last["certified_accuracy"] is not None:
        rows += [[f"certified accuracy at eps={config.eps:g}", last["certified_accuracy"]],
                 ["Lipschitz upper bound", last["lipschitz_upper"]]]
    print(format_table(rows, [f"after epoch {last['epoch']}", "value"], args.table))
    where = result.model_file or result.out
    print(f"checkpoint: {where}; log: {result.out / 'log.jsonl'}")
    return 0


def check_run_folder(out: str | None, device: str | None, resume: bool,
                     overwrite: bool = False) -> None:
    """Fail before training on an unusable --out or --device, and on a folder that holds a
    training run unless it is resumed (--resume) or replaced on purpose (--overwrite)."""
    check_output_folder(out)
    if device not in (None, "auto"):
        resolve_device(device)
    if out is None or resume:
        return
    from lipcert.train.checkpointing import MODEL_FILE, STATE_JSON
    from lipcert.train.loop import LOG_FILE

    held = [name for name in (STATE_JSON, LOG_FILE, MODEL_FILE) if (Path(out) / name).exists()]
    if held and not overwrite:
        raise BadInputError(f"--out {out} already holds a training run ({', '.join(held)}); "
                            "pass --resume to continue it, --overwrite to replace it, or "
                            "choose another --out.")
    if held and os.environ.get("RANK", "0") == "0":
        print(f"note: replacing the training run in {out} (--overwrite).", file=sys.stderr)


def run_demo_command(args: argparse.Namespace) -> int:
    from lipcert.train.demo import run_demo

    check_int(args, "epochs", 1)
    check_run_folder(args.out, args.device, resume=True)
    demo = run_demo(args.out, epochs=args.epochs, quick=args.quick, seed=args.seed,
                    device=args.device, progress=args.progress)
    print(f"\nLipschitz constant bracket: [{demo.lipschitz_lower:.4f}, "
          f"{demo.lipschitz_upper:.4f}] (lower: gradient-norm search; upper: sound bound)")
    print(f"clean accuracy: {demo.clean_accuracy:.3f}")
    rows = [[f"{eps:g}", acc] for eps, acc in demo.certified.items()]
    print(format_table(rows, ["l2 radius", "certified accuracy"], args.table))
    print(f"curve: {demo.curve}; model: {demo.train.model_file}")
    return 0
