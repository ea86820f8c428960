"""``lipcert attack CHECKPOINT`` (robust accuracy table) and ``lipcert audit CHECKPOINT``
(attacks every certified point inside its certified ball)."""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.report import format_table, new_figure, save_figure, write_json

NORMS = {"2": 2.0, "inf": math.inf}


def register(subparsers) -> None:
    attack = subparsers.add_parser(
        "attack", help="robust accuracy of a checkpoint under PGD, DeepFool or Carlini-Wagner",
        description="Attack a saved model on a data set and print its accuracy under attack at "
        "each radius (an upper bound on the true robust accuracy).",
    )
    _add_common(attack)
    attack.add_argument("--norm", choices=sorted(NORMS), default="2", help="threat model (pgd "
                        "takes 2 or inf; deepfool and cw are l2 attacks)")
    attack.add_argument("--eps", type=float, nargs="+", required=True, help="attack radii")
    attack.add_argument("--attack", choices=("pgd", "deepfool", "cw"), default="pgd")
    attack.add_argument("--steps", type=int, default=50, help="iterations (default 50)")
    attack.add_argument("--restarts", type=int, default=1, help="PGD random restarts")
    attack.add_argument("--loss", choices=("margin", "ce"), default="margin",
                        help="PGD loss (margin: stronger on Lipschitz networks)")
    attack.set_defaults(func=run_attack)

    audit = subparsers.add_parser(
        "audit", help="try to break every Lipschitz certificate of a checkpoint",
        description="Certify each point with lipcert.certify.lipschitz_radii, then attack it "
        "with l2 PGD just inside its certified radius and with the minimal-distance attacks. "
        "Prints the number of violations (broken certificates: exit status 1) and the "
        "tightness ratio minimal-adversarial-distance / certified-radius.",
    )
    _add_common(audit)
    audit.add_argument("--steps", type=int, default=100, help="PGD iterations (default 100)")
    audit.add_argument("--minimal", choices=("best", "deepfool", "cw"), default="best",
                       help="minimal-distance attack (default best: DeepFool and Carlini-Wagner)")
    audit.add_argument("--plot", default=None, help="write a histogram of the tightness (PNG)")
    audit.set_defaults(func=run_audit)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model.safetensors saved by lipcert (JSON spec beside)")
    parser.add_argument("--data", default=None, help="data set (default: the checkpoint's)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--root", default=None, help="folder with the original files (local sets)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N points")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def load_model_and_data(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The checkpoint's model (eval mode, input normalization prepended) and the data on the
    requested device, inputs in [0, 1]."""
    from lipcert import data, models
    from lipcert.bounds import Normalize

    device = _device(args.device)
    spec = models.read_spec(args.checkpoint)
    model = models.load(args.checkpoint, map_location=device)
    if spec.get("normalization"):
        norm = spec["normalization"]
        model = nn.Sequential(Normalize(norm["mean"], norm["std"]), model).to(device).eval()
    name = args.data or spec.get("dataset")
    if not name:
        raise BadInputError(f"{args.checkpoint} names no data set; pass --data NAME.")
    x, y = data.load(name, args.split, root=args.root).tensors
    if args.limit is not None:
        if args.limit < 1:
            raise BadInputError(f"--limit must be >= 1, got {args.limit}.")
        x, y = x[: args.limit], y[: args.limit]
    dtype = next(model.parameters()).dtype
    print(f"{args.checkpoint} ({spec['recipe']}) on {name} {args.split}: {len(y)} points, "
          f"device {device}")
    return model, x.to(device=device, dtype=dtype), y.to(device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda was requested but no CUDA GPU is available.")
    return device


def run_attack(args: argparse.Namespace) -> int:
    from lipcert.attacks import robust_accuracy

    model, x, y = load_model_and_data(args)
    result = robust_accuracy(
        model, (x, y), args.eps, norm=NORMS[args.norm], attack=args.attack,
        batch_size=args.batch_size, progress=args.progress, steps=args.steps,
        restarts=args.restarts, loss=args.loss, seed=args.seed,
    )
    print(f"clean accuracy {result['clean_accuracy']:.4f}; attack {args.attack}, "
          f"{args.steps} steps")
    rows = [[args.norm, row["eps"], f"{row['robust_accuracy']:.4f}"] for row in result["results"]]
    print(format_table(rows, ["norm", "eps", "robust accuracy"]))
    if args.json:
        write_json(args.json, {"checkpoint": args.checkpoint, **result})
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from lipcert.attacks import audit
    from lipcert.bounds import lipschitz_bound
    from lipcert.certify import lipschitz_radii

    model, x, y = load_model_and_data(args)
    bound = lipschitz_bound(model, x[:1])
    radii = torch.cat([
        lipschitz_radii(model, x[i : i + args.batch_size], y[i : i + args.batch_size], bound=bound)
        for i in range(0, len(y), args.batch_size)
    ])
    print(f"Lipschitz bound {float(bound):.4g}; {int((radii > 0).sum())} of {len(y)} points "
          "certified at a positive radius")
    report = audit(model, x, y, radii, pgd_steps=args.steps, minimal_method=args.minimal,
                   seed=args.seed, batch_size=args.batch_size)
    print(report)
    if args.plot:
        print(f"wrote {save_figure(tightness_histogram(report.tightness), args.plot)}")
    if args.json:
        write_json(args.json, {"checkpoint": args.checkpoint, **report.summary()})
    report.raise_if_violated()
    return 0


def tightness_histogram(tightness: torch.Tensor):
    """Histogram figure of the finite tightness ratios, with the soundness line at 1."""
    fig, ax = new_figure(6, 4)
    finite = tightness[torch.isfinite(tightness)].double().cpu().numpy()
    ax.hist(finite, bins=40, color="tab:blue")
    ax.axvline(1.0, color="tab:red", linestyle="--", label="ratio 1 (below: broken)")
    ax.set_xlabel("minimal adversarial distance / certified radius")
    ax.set_ylabel("points")
    ax.set_title(f"certificate tightness ({len(finite)} certified points with an attack)")
    ax.legend()
    return fig
