"""Certified training on mnist-5k: lipcert's recipes against orthogonium and deel-torchlip,
and LMT against CE.

Side by side in one run, same data (the embedded mnist-5k, images in [0, 1]), the same seeds
(0, 1, 2: mean and spread) and the same epoch budget:

- lipcert ``sll-s`` and ``sll-m`` (offset cross-entropy), ``cpl-s`` (multi-margin hinge),
  ``aol-s`` (offset cross-entropy), trained by :func:`lipcert.train.train`;
- orthogonium's ``StagedCNN`` (AOC convolutions, Boissin et al. 2025, arXiv 2501.07930;
  OrthoLinear; MaxMin) at MNIST size, with its ``LossXent`` (offset 1.5 sqrt 2, temperature
  0.25) and schedule-free AdamW at lr 5e-3, trained by the same loop;
- deel-torchlip's recommended MNIST-style network (SpectralConv2d / GroupSort2 /
  ScaledL2NormPool2d / SpectralLinear, from its multiclass tutorial) with its
  HKRMulticlassLoss at the best settings of a small sweep (alpha 0.9, margin 2.12), trained
  by the same loop (so the times per step compare the models, not the loops);
- the unconstrained ``lmt-mnist`` CNN trained with LMT++ and with plain cross-entropy.

Every model is certified the same way: the sound network bound of :mod:`lipcert.bounds`
(deel's network after its own ``vanilla_export``; orthogonium's convolutions and dense layers
through lipcert's own operator-norm rules for ``nn.Conv2d`` / ``nn.Linear``, computed from
their weights, never assumed orthogonal) and pairwise last-layer radii; the bracket
[lower, upper] of its Lipschitz constant uses :func:`lipcert.bounds.lipschitz_lower_bound`.
Time per training step is measured round-robin in the same run (ratios to orthogonium).
Needs ``pip install --no-deps deel-torchlip orthogonium schedulefree``.

Usage: ``python benchmarks/certified_training.py [--epochs 20] [--seeds 0 1 2]``
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
from lipcert.train.optim import make_optimizer, set_optimizer_mode

RESULTS = Path(__file__).parent / "results"
RADII = (0.5, 1.0, 1.58)
TARGET_EPS = 1.0
SEEDS = (0, 1, 2)
BATCH = 128
TIME = "seconds_per_epoch_interleaved"
ORTHOGONIUM = "orthogonium StagedCNN (LossXent, schedule-free AdamW)"


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
    optimizer: str = "adam"


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


def orthogonium_network() -> nn.Module:
    """orthogonium's ``StagedCNN`` for 1 x 28 x 28 images: three stages of one 3x3 AOC
    convolution (16, 32, 64 channels, circular padding, no bias) each followed by a strided
    AOC convolution between stages, MaxMin, then two OrthoLinear layers of 64 units and an
    OrthoLinear head (239k parameters; without its LayerCentering, whose default cannot be
    built without a channel count)."""
    from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d
    from orthogonium.model_factory.classparam import ClassParam
    from orthogonium.model_factory.models_factory import StagedCNN

    conv = ClassParam(AdaptiveOrthoConv2d, kernel_size=3, bias=False, padding=1)
    return StagedCNN(img_shape=(1, 28, 28), dim_repeats=[(16, 1), (32, 1), (64, 1)],
                     dim_nb_dense=(64, 2), n_classes=10, conv=conv, norm=None)


def register_orthogonium_rules() -> None:
    """The one orthogonium module lipcert has no rule for: ``MaxMin`` splits the channels in
    two halves and returns their elementwise max and min, a piecewise permutation of the
    input, so it is 1-Lipschitz (exact). Its convolutions (``nn.Conv2d`` subclasses with a
    parametrized weight) and dense layers (``nn.Linear``) fall under lipcert's operator-norm
    rules, which compute the norm of the weight the forward pass uses."""
    from orthogonium.layers.custom_activations import MaxMin

    def one(module: nn.Module, input_shape: torch.Size) -> NormBound:
        return NormBound(torch.tensor(1.0, dtype=torch.float64), "exact", "max-min")

    register_rule(MaxMin, one)


def orthogonium_export(model: nn.Module) -> nn.Module:
    """A frozen plain-torch copy of a trained ``StagedCNN``: each convolution and dense layer
    becomes an ``nn.Conv2d`` / ``nn.Linear`` holding the weight its parametrization computes
    now (in eval mode). orthogonium's power iteration updates its vectors on every weight
    computation, even in eval mode, so the live model's weights drift from call to call and
    lipcert refuses a bound for it; the copy is the classifier that is measured and certified.
    """
    model.eval()
    layers: list[nn.Module] = []
    with torch.no_grad():
        for module in model:
            if isinstance(module, nn.Conv2d):
                plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                                  module.stride, module.padding, module.dilation,
                                  module.groups, module.bias is not None, module.padding_mode)
            elif isinstance(module, nn.Linear):
                plain = nn.Linear(module.in_features, module.out_features,
                                  module.bias is not None)
            else:
                layers.append(module)
                continue
            plain.weight.copy_(module.weight)
            if module.bias is not None:
                plain.bias.copy_(module.bias)
            layers.append(plain)
    return nn.Sequential(*layers).eval()


def orthogonium_loss() -> nn.Module:
    from orthogonium.losses import LossXent

    return LossXent(10, offset=1.5 * math.sqrt(2.0), temperature=0.25)


def entries() -> list[Entry]:
    sll_offset = 1.5 * math.sqrt(2.0)
    return [
        Entry("sll-s (offset CE, 1.5 sqrt 2)", "lipcert", lambda: models.build("sll-s"),
              lambda: build_loss("margin-ce", eps=TARGET_EPS, offset=sll_offset), 0.01,
              "triangular"),
        Entry("sll-m (offset CE, 2 sqrt 2)", "lipcert", lambda: models.build("sll-m"),
              lambda: build_loss("margin-ce", eps=TARGET_EPS, offset=2 * math.sqrt(2.0)),
              0.01, "triangular"),
        Entry(ORTHOGONIUM, "orthogonium", orthogonium_network, orthogonium_loss, 5e-3,
              "constant", orthogonium_export, optimizer="schedulefree"),
        Entry("cpl-s", "lipcert", lambda: models.build("cpl-s"),
              lambda: build_loss("hinge", eps=TARGET_EPS, margin=sll_offset), 0.01,
              "triangular"),
        Entry("aol-s", "lipcert", lambda: models.build("aol-s"),
              lambda: build_loss("margin-ce", eps=TARGET_EPS, offset=sll_offset), 0.01,
              "triangular"),
        Entry("deel HKR (alpha .9, margin 2.12)", "deel-torchlip", deel_network,
              lambda: OneHotLoss(hkr(0.9, 2.12)), 1e-3, "constant", deel_export),
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


def evaluate_entry(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   seed: int) -> dict:
    model.eval()
    report = network_report(model, images)
    radii = certified_radii(model, images, labels, report, reference="float64")
    with torch.no_grad():
        clean = float((model(images).argmax(1) == labels).double().mean())
    lower = lipschitz_lower_bound(model, images[:32], steps=50, seed=seed)
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
    """Median seconds per training step of each entry (its own optimizer), timed round-robin.

    The machine is shared, so its speed drifts during a run; timing every model in each round
    exposes all of them to the same drift, unlike the epoch times of runs done one after
    the other.
    """
    setups = []
    for entry in all_entries:
        torch.manual_seed(SEEDS[0])
        model = entry.build()
        loss = entry.loss()
        optimizer = make_optimizer(entry.optimizer, model.parameters(), entry.lr)
        set_optimizer_mode(optimizer, training=True)
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


def summarize(name: str, library: str, runs: list[dict]) -> dict:
    """Mean over seeds of each measurement, with the half range (``*_spread``)."""
    row: dict = {"name": name, "library": library, "runs": runs}

    def mean_spread(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), (max(values) - min(values)) / 2

    for key in ("clean_accuracy", "median_radius", "lipschitz_lower", "lipschitz_upper",
                "seconds_per_epoch"):
        row[key], row[f"{key}_spread"] = mean_spread([r[key] for r in runs])
    row["certified_accuracy"], row["certified_accuracy_spread"] = {}, {}
    for eps in RADII:
        key = f"{eps:g}"
        mean, spread = mean_spread([r["certified_accuracy"][key] for r in runs])
        row["certified_accuracy"][key], row["certified_accuracy_spread"][key] = mean, spread
    return row


def run(epochs: int, seeds: list[int], chosen: list[Entry]) -> dict:
    register_deel_rules()
    register_orthogonium_rules()
    train_data, test_data = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    images, labels = test_data.tensors
    rows, curves = [], {}
    started = time.perf_counter()
    for entry in chosen:
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = entry.build()
            result = train(model, train_data, test_data, entry.loss(), epochs, lr=entry.lr,
                           optimizer=entry.optimizer, schedule=entry.schedule, seed=seed,
                           batch_size=BATCH, eps=TARGET_EPS, certify=False, progress=False,
                           device="cpu", eval_every=epochs)
            seconds = statistics.median(r["train_seconds"] for r in result.history)
            measured = evaluate_entry(entry.export(result.model), images, labels, seed)
            radii = measured.pop("radii")
            if seed == seeds[0]:
                curves[entry.name] = radii
            runs.append({"seed": seed, "seconds_per_epoch": seconds, **measured})
            print(f"{entry.name} seed {seed}: clean {measured['clean_accuracy']:.3f}, "
                  f"{measured['certified_accuracy']} in {seconds:.1f} s/epoch", flush=True)
        rows.append(summarize(entry.name, entry.library, runs))
    x, y = train_data.tensors[0][:BATCH], train_data.tensors[1][:BATCH]
    per_step = interleaved_step_seconds(chosen, x, y, rounds=5)
    steps_per_epoch = math.ceil(len(train_data) / BATCH)
    for row in rows:
        row["seconds_per_step_interleaved"] = per_step[row["name"]]
        row[TIME] = per_step[row["name"]] * steps_per_epoch
        row["step_time_over_orthogonium"] = (per_step[row["name"]] / per_step[ORTHOGONIUM]
                                             if ORTHOGONIUM in per_step else None)
    return {"rows": rows, "curves": curves, "total_seconds": time.perf_counter() - started}


def targets(rows: list[dict], epochs: int) -> dict:
    """The issue's targets (means over seeds) and the earlier deel / LMT comparisons; with
    ``--only``, those whose models were run."""
    by_name = {row["name"]: row for row in rows}
    key = f"{TARGET_EPS:g}"
    ours = [r for r in rows if r["library"] == "lipcert" and not r["name"].startswith("lmt")]
    checks: dict = {}
    if epochs >= 60:
        checks["target_60_epochs_cert_1.58_at_least_50_clean_at_least_95"] = [
            r["name"] for r in ours
            if r["certified_accuracy"]["1.58"] >= 0.50 and r["clean_accuracy"] >= 0.95]
    lmt_names = ("lmt-mnist LMT++ (eps 1.0)", "lmt-mnist cross-entropy")
    if ORTHOGONIUM not in by_name or not all(name in by_name for name in lmt_names):
        return checks
    ortho = by_name[ORTHOGONIUM]
    radii = [f"{eps:g}" for eps in RADII]

    def beats_orthogonium(row: dict) -> bool:
        return all(row["certified_accuracy"][r] >= ortho["certified_accuracy"][r] for r in radii)

    qualifying = [r["name"] for r in ours
                  if beats_orthogonium(r) and r["step_time_over_orthogonium"] <= 0.5]
    best = max(ours, key=lambda r: (beats_orthogonium(r), r["certified_accuracy"][key]))
    deel = max((r for r in rows if r["library"] == "deel-torchlip"),
               key=lambda r: r["certified_accuracy"][key])
    lmt = by_name["lmt-mnist LMT++ (eps 1.0)"]["certified_accuracy"][key]
    plain = by_name["lmt-mnist cross-entropy"]["certified_accuracy"][key]
    gain = best["certified_accuracy"][key] - deel["certified_accuracy"][key]
    ratio = lmt / plain if plain > 0 else (math.inf if lmt > 0 else float("nan"))
    checks.update({
        "best_lipcert": best["name"],
        "best_lipcert_minus_orthogonium_points": {
            r: 100 * (best["certified_accuracy"][r] - ortho["certified_accuracy"][r])
            for r in radii},
        "best_lipcert_step_time_over_orthogonium": best["step_time_over_orthogonium"],
        "lipcert_recipes_at_least_orthogonium_every_radius_at_half_its_step_time": qualifying,
        "target_beat_orthogonium_at_half_its_step_time": bool(qualifying),
    })
    checks.update({
        "best_deel": deel["name"],
        "certified_gain_over_deel_points_at_1.0": 100 * gain,
        "time_per_epoch_ratio_best_over_deel": best[TIME] / deel[TIME],
        "lmt_over_ce_certified_ratio_at_1.0": ratio,
        "lmt_at_least_10x_ce": bool(ratio >= 10),
    })
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs for every model")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                        help="run only the models whose name contains one of these texts "
                        "(e.g. --epochs 60 --only sll-m); results go to a file of their own")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [e for e in entries()
              if args.only is None or any(text in e.name for text in args.only)]
    outcome = run(args.epochs, args.seeds, chosen)
    rows = outcome["rows"]
    headers = ["model", "library", "clean", *[f"cert@{e:g}" for e in RADII],
               "median radius", "step time / orthogonium", "s/epoch (interleaved)",
               "L lower", "L upper"]

    def pm(row: dict, eps: float) -> str:
        key = f"{eps:g}"
        return (f"{100 * row['certified_accuracy'][key]:.1f} "
                f"+- {100 * row['certified_accuracy_spread'][key]:.1f}")

    table = [[r["name"], r["library"],
              f"{100 * r['clean_accuracy']:.1f} +- {100 * r['clean_accuracy_spread']:.1f}",
              *[pm(r, e) for e in RADII], r["median_radius"],
              r["step_time_over_orthogonium"], r[TIME], r["lipschitz_lower"],
              r["lipschitz_upper"]] for r in rows]
    print(format_table(table, headers))
    checks = targets(rows, args.epochs)
    for name, value in checks.items():
        print(f"{name}: {value}")
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch " \
              f"{torch.__version__}, {platform.python_version()}"
    suffix = ("" if args.epochs == 20 else f"_{args.epochs}") + ("" if args.only is None
                                                                else "_only")
    write_json(RESULTS / f"certified_training{suffix}.json", {
        "data": "mnist-5k (4000 train / 1000 test)", "epochs": args.epochs,
        "seeds": args.seeds, "batch_size": BATCH, "machine": machine,
        "total_seconds": outcome["total_seconds"], "rows": rows, "targets": checks,
    })
    plot_certified_curves(outcome["curves"], RESULTS / f"certified_training{suffix}.png",
                          f"mnist-5k, {args.epochs} epochs each (seed {args.seeds[0]})")
    print(f"total {outcome['total_seconds']:.0f} s; wrote "
          f"{RESULTS / f'certified_training{suffix}.json'}")


if __name__ == "__main__":
    main()
