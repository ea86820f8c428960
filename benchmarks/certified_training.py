"""Certified training on mnist-5k: lipcert's recipes against deel-torchlip, and LMT against CE.

Side by side in one run, same data (the embedded mnist-5k, images in [0, 1]), same seed and
the same epoch budget:

- lipcert ``sll-s`` (offset cross-entropy), ``cpl-s`` (multi-margin hinge), ``aol-s``
  (offset cross-entropy), trained by :func:`lipcert.train.train`;
- deel-torchlip's recommended MNIST-style network (SpectralConv2d / GroupSort2 /
  ScaledL2NormPool2d / SpectralLinear, from its multiclass tutorial) with its
  HKRMulticlassLoss, trained by the same loop (so the seconds per epoch compare the models,
  not the loops), once with the tutorial's loss settings and once with the margin tuned for
  the target radius;
- the unconstrained ``lmt-mnist`` CNN trained with LMT++ and with plain cross-entropy.

Every model is certified the same way: the sound network bound of :mod:`lipcert.bounds`
(deel's network after its own ``vanilla_export``) and pairwise last-layer radii; the bracket
[lower, upper] of its Lipschitz constant uses :func:`lipcert.bounds.lipschitz_lower_bound`.
Needs ``pip install --no-deps deel-torchlip``.

Usage: ``python benchmarks/certified_training.py [--epochs 10]``
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipcert import data, models
from lipcert.bounds import lipschitz_lower_bound, register_rule
from lipcert.certify import certified_accuracy
from lipcert.errors import UnsupportedLayerError
from lipcert.linalg import NormBound
from lipcert.losses import build_loss
from lipcert.report import format_table, write_json
from lipcert.train import train
from lipcert.train.demo import plot_certified_curves
from lipcert.train.evaluation import certified_radii, network_report
from lipcert.train.loop import compute_loss

RESULTS = Path(__file__).parent / "results"
RADII = (0.5, 1.0, 1.58)
TARGET_EPS = 1.0
SEED = 0
BATCH = 128
TIME = "seconds_per_epoch_interleaved"


@dataclass
class Entry:
    """One trained model: how to build it, its loss and optimizer, how to export it."""

    name: str
    library: str
    build: Callable[[], nn.Module]
    loss: Callable[[], nn.Module]
    lr: float
    schedule: str
    export: Callable[[nn.Module], nn.Module] = lambda model: model


class OneHotLoss(nn.Module):
    """Adapts a loss on one-hot targets (deel-torchlip's HKR) to integer labels."""

    def __init__(self, loss: nn.Module, classes: int = 10) -> None:
        super().__init__()
        self.inner, self.classes = loss, classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, F.one_hot(target, self.classes).to(logits.dtype))


def deel_network() -> nn.Module:
    """deel-torchlip's multiclass MNIST network (its Fashion-MNIST tutorial, 'Example 4')."""
    from deel import torchlip

    return torchlip.Sequential(
        torchlip.SpectralConv2d(1, 16, (3, 3), padding="same"), torchlip.GroupSort2(),
        torchlip.ScaledL2NormPool2d(kernel_size=(2, 2)),
        torchlip.SpectralConv2d(16, 32, (3, 3), padding="same"), torchlip.GroupSort2(),
        torchlip.ScaledL2NormPool2d(kernel_size=(2, 2)),
        nn.Flatten(), torchlip.SpectralLinear(1568, 64), torchlip.GroupSort2(),
        torchlip.SpectralLinear(64, 10, bias=False),
    )


def register_deel_rules() -> None:
    """Lipschitz rules for the two modules left after deel's vanilla export.

    GroupSort2 sorts pairs of channels: a piecewise permutation, 1-Lipschitz (exact).
    LPPool2d(2) with stride equal to its kernel takes the l2 norm of disjoint windows:
    1-Lipschitz (each window's norm is 1-Lipschitz in that window, windows are disjoint).
    """
    from deel.torchlip import GroupSort2

    def one(module: nn.Module, input_shape: torch.Size) -> NormBound:
        return NormBound(torch.tensor(1.0, dtype=torch.float64), "exact", "group-sort")

    def l2_pool(module: nn.LPPool2d, input_shape: torch.Size) -> NormBound:
        kernel = nn.modules.utils._pair(module.kernel_size)
        stride = nn.modules.utils._pair(module.stride or module.kernel_size)
        if float(module.norm_type) != 2.0 or stride != kernel or module.ceil_mode:
            raise UnsupportedLayerError(
                "only LPPool2d(norm_type=2) with stride == kernel_size and ceil_mode=False is "
                f"bounded here, got {module}."
            )
        return NormBound(torch.tensor(1.0, dtype=torch.float64), "upper", "l2-pool")

    register_rule(GroupSort2, one)
    register_rule(nn.LPPool2d, l2_pool)


def entries() -> list[Entry]:
    sll_offset = 1.5 * math.sqrt(2.0)
    return [
        Entry("sll-s", "lipcert", lambda: models.build("sll-s"),
              lambda: build_loss("margin-ce", eps=TARGET_EPS, offset=sll_offset), 0.01,
              "triangular"),
        Entry("cpl-s", "lipcert", lambda: models.build("cpl-s"),
              lambda: build_loss("hinge", eps=TARGET_EPS, margin=sll_offset), 0.01,
              "triangular"),
        Entry("aol-s", "lipcert", lambda: models.build("aol-s"),
              lambda: build_loss("margin-ce", eps=TARGET_EPS, offset=sll_offset), 0.01,
              "triangular"),
        Entry("deel HKR (tutorial: alpha .99, margin .25)", "deel-torchlip", deel_network,
              lambda: OneHotLoss(hkr(0.99, 0.25)), 1e-3, "constant", deel_export),
        Entry("deel HKR (margin 1.5 sqrt 2)", "deel-torchlip", deel_network,
              lambda: OneHotLoss(hkr(0.99, sll_offset)), 1e-3, "constant", deel_export),
        Entry("lmt-mnist LMT++ (eps 1.0)", "lipcert", lambda: models.build("lmt-mnist"),
              lambda: build_loss("lmt++", eps=TARGET_EPS, ramp_epochs=2), 3e-3, "triangular"),
        Entry("lmt-mnist cross-entropy", "lipcert", lambda: models.build("lmt-mnist"),
              lambda: build_loss("ce"), 3e-3, "triangular"),
    ]


def hkr(alpha: float, margin: float) -> nn.Module:
    from deel.torchlip import HKRMulticlassLoss

    return HKRMulticlassLoss(alpha=alpha, min_margin=margin)


def deel_export(model: nn.Module) -> nn.Module:
    return model.vanilla_export()


def evaluate_entry(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    model.eval()
    report = network_report(model, images)
    radii = certified_radii(model, images, labels, report, reference="float64")
    with torch.no_grad():
        clean = float((model(images).argmax(1) == labels).double().mean())
    lower = lipschitz_lower_bound(model, images[:32], steps=50, seed=SEED)
    table = certified_accuracy(radii, list(RADII))
    return {"clean_accuracy": clean,
            "certified_accuracy": {f"{eps:g}": table[eps] for eps in RADII},
            "median_radius": float(radii.median()),
            "lipschitz_lower": float(lower), "lipschitz_upper": float(report),
            "radii": radii}


def interleaved_step_seconds(
    all_entries: list[Entry], images: torch.Tensor, labels: torch.Tensor, rounds: int,
    steps: int = 3,
) -> dict[str, float]:
    """Median seconds per training step of each entry, timed round-robin.

    The machine is shared, so its speed drifts during a run; timing every model in each round
    exposes all of them to the same drift, unlike the epoch times of runs done one after
    the other.
    """
    setups = []
    for entry in all_entries:
        torch.manual_seed(SEED)
        model = entry.build()
        loss = entry.loss()
        optimizer = torch.optim.Adam(model.parameters(), lr=entry.lr)
        setups.append((entry.name, model, loss, optimizer))
    samples: dict[str, list[float]] = {name: [] for name, *_ in setups}
    for round_index in range(rounds + 1):  # round 0 warms up
        for name, model, loss, optimizer in setups:
            started = time.perf_counter()
            for _ in range(steps):
                value = compute_loss(loss, model(images), labels, model, images)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
            if round_index:
                samples[name].append((time.perf_counter() - started) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def run(epochs: int) -> dict:
    torch.manual_seed(SEED)
    register_deel_rules()
    train_data, test_data = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    images, labels = test_data.tensors
    rows, curves = [], {}
    started = time.perf_counter()
    for entry in entries():
        torch.manual_seed(SEED)
        model = entry.build()
        result = train(model, train_data, test_data, entry.loss(), epochs, lr=entry.lr,
                       schedule=entry.schedule, seed=SEED, batch_size=BATCH, eps=TARGET_EPS,
                       certify=False, progress=False, device="cpu")
        seconds = statistics.median(r["train_seconds"] for r in result.history)
        measured = evaluate_entry(entry.export(result.model), images, labels)
        curves[entry.name] = measured.pop("radii")
        rows.append({"name": entry.name, "library": entry.library,
                     "seconds_per_epoch": seconds, **measured})
        print(f"{entry.name}: {rows[-1]['certified_accuracy']} in {seconds:.1f} s/epoch",
              flush=True)
    x, y = train_data.tensors[0][:BATCH], train_data.tensors[1][:BATCH]
    per_step = interleaved_step_seconds(entries(), x, y, rounds=5)
    steps_per_epoch = math.ceil(len(train_data) / BATCH)
    for row in rows:
        row["seconds_per_epoch_interleaved"] = per_step[row["name"]] * steps_per_epoch
    return {"rows": rows, "curves": curves, "total_seconds": time.perf_counter() - started}


def targets(rows: list[dict]) -> dict:
    by_name = {row["name"]: row for row in rows}
    key = f"{TARGET_EPS:g}"
    ours = [r for r in rows if r["library"] == "lipcert" and not r["name"].startswith("lmt")]
    best = max(ours, key=lambda r: r["certified_accuracy"][key])
    deel = max((r for r in rows if r["library"] == "deel-torchlip"),
               key=lambda r: r["certified_accuracy"][key])
    lmt = by_name["lmt-mnist LMT++ (eps 1.0)"]["certified_accuracy"][key]
    plain = by_name["lmt-mnist cross-entropy"]["certified_accuracy"][key]
    gain = best["certified_accuracy"][key] - deel["certified_accuracy"][key]
    time_ratio = best[TIME] / deel[TIME]
    qualifying = [r["name"] for r in ours
                  if r["certified_accuracy"][key] - deel["certified_accuracy"][key] >= 0.03
                  and r[TIME] <= deel[TIME]]
    ratio = lmt / plain if plain > 0 else (math.inf if lmt > 0 else float("nan"))
    lmt_names = ("lmt-mnist LMT++ (eps 1.0)", "lmt-mnist cross-entropy")
    half = [by_name[name]["certified_accuracy"]["0.5"] for name in lmt_names]
    medians = [by_name[name]["median_radius"] for name in lmt_names]
    return {
        "best_lipcert": best["name"], "best_deel": deel["name"],
        "certified_gain_points_at_1.0": 100 * gain,
        "time_per_epoch_ratio_best_over_deel": time_ratio,
        "beats_deel_by_3_points_at_no_more_time": bool(gain >= 0.03 and time_ratio <= 1.0),
        "lipcert_models_3_points_better_at_no_more_time": qualifying,
        "lmt_over_ce_certified_ratio_at_1.0": ratio,
        "lmt_at_least_10x_ce": bool(ratio >= 10),
        "lmt_over_ce_certified_ratio_at_0.5": half[0] / half[1] if half[1] > 0 else math.inf,
        "lmt_over_ce_median_radius_ratio": medians[0] / medians[1] if medians[1] > 0
        else math.inf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs for every model")
    args = parser.parse_args()
    outcome = run(args.epochs)
    rows = outcome["rows"]
    headers = ["model", "library", "clean", *[f"cert@{e:g}" for e in RADII],
               "median radius", "s/epoch (interleaved)", "s/epoch (run)", "L lower", "L upper"]
    table = [[r["name"], r["library"], r["clean_accuracy"],
              *[r["certified_accuracy"][f"{e:g}"] for e in RADII], r["median_radius"], r[TIME],
              r["seconds_per_epoch"], r["lipschitz_lower"], r["lipschitz_upper"]] for r in rows]
    print(format_table(table, headers))
    checks = targets(rows)
    for name, value in checks.items():
        print(f"{name}: {value}")
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch " \
              f"{torch.__version__}, {platform.python_version()}"
    write_json(RESULTS / "certified_training.json", {
        "data": "mnist-5k (4000 train / 1000 test)", "epochs": args.epochs, "seed": SEED,
        "batch_size": BATCH, "machine": machine, "total_seconds": outcome["total_seconds"],
        "rows": rows, "targets": checks,
    })
    plot_certified_curves(outcome["curves"], RESULTS / "certified_training.png",
                          f"mnist-5k, {args.epochs} epochs each: certified accuracy")
    print(f"total {outcome['total_seconds']:.0f} s; wrote {RESULTS / 'certified_training.json'}")


if __name__ == "__main__":
    main()
