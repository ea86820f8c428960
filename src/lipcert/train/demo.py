"""``lipcert demo``: train and certify a small 1-Lipschitz network in about a minute on 2 cores.

Trains the ``sll-m`` recipe (two-stage SLL, Araujo et al. 2023, arXiv 2303.03169) on the
embedded ``mnist-5k`` with the offset cross-entropy, then reports the bracket [lower, upper] of its
Lipschitz constant (gradient-norm search below, the sound network bound above) and its
certified accuracy at l2 radii 0.5, 1.0 and 1.58, and draws the certified-accuracy curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from lipcert.certify import certified_accuracy
from lipcert.report import certified_accuracy_figure, save_figure, write_json
from lipcert.train.config import TrainConfig
from lipcert.train.evaluation import certified_radii, network_report, predict_logits
from lipcert.train.loop import TrainResult
from lipcert.train.run import train_from_config

REPORT_RADII = (0.5, 1.0, 1.58)
CURVE_FILE = "certified_accuracy.png"

# lipcert train's defaults (margin-ce, offset 2 sqrt 2 eps, temperature 0.25, Adam lr 0.01,
# triangular; chosen on a validation split by benchmarks/recipe_search.py) on the two-stage
# sll-m, which costs 1.6x sll-s per step: 25 epochs take the time 40 of sll-s took.
# Certified accuracy is measured every 10 epochs: the sound per-epoch certificate (with its
# rounding allowance) costs about a third of an epoch.
DEMO_CONFIG = dict(model="sll-m", data="mnist-5k", loss="margin-ce", eps=1.0, epochs=25,
                   batch_size=128, lr=0.01, schedule="triangular", temperature=0.25,
                   offset=2 * math.sqrt(2.0), eval_every=10)
QUICK_CONFIG = dict(DEMO_CONFIG, epochs=1, width=8, depth=1, batch_size=64)
QUICK_SIZES = (512, 200)  # training and test images used by --quick


@dataclass
class DemoResult:
    """What :func:`run_demo` measured; ``to_dict`` is the ``summary.json`` it writes."""

    lipschitz_lower: float
    lipschitz_upper: float
    clean_accuracy: float
    certified: dict[float, float]
    curve: Path
    train: TrainResult = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lipschitz_bracket": [self.lipschitz_lower, self.lipschitz_upper],
            "clean_accuracy": self.clean_accuracy,
            "certified_accuracy": {f"{eps:g}": acc for eps, acc in self.certified.items()},
            "curve": str(self.curve),
            "epochs": self.train.epochs_done,
        }


def plot_certified_curves(
    radii: Mapping[str, torch.Tensor], path: str | Path, title: str,
    marks: Sequence[float] = REPORT_RADII,
) -> Path:
    """Certified accuracy against the l2 radius, one line per entry of ``radii``
    (:func:`lipcert.report.certified_accuracy_figure`), saved at ``path``."""
    return save_figure(certified_accuracy_figure(radii, marks=marks, title=title), path)


def demo_data(config: TrainConfig, quick: bool) -> tuple[TensorDataset, TensorDataset]:
    from lipcert import data

    train_data, test_data = data.load(config.data, "train"), data.load(config.data, "test")
    if not quick:
        return train_data, test_data
    n_train, n_test = QUICK_SIZES
    return (TensorDataset(*(t[:n_train] for t in train_data.tensors)),
            TensorDataset(*(t[:n_test] for t in test_data.tensors)))


def run_demo(
    out: str | Path = "demo-out",
    *,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> DemoResult:
    """Train, certify and plot; writes the run, ``summary.json`` and the PNG curve to ``out``.

    ``quick=True`` trains a narrower network for one epoch on 512 images (seconds; for
    tests). The lower end of the bracket is a gradient-norm search
    (:func:`lipcert.bounds.lipschitz_lower_bound`): the true constant lies in between.
    """
    from lipcert.bounds import lipschitz_lower_bound
    from lipcert.train.loop import resolve_device

    settings = dict(QUICK_CONFIG if quick else DEMO_CONFIG, seed=seed, device=device,
                    out=str(out), progress=progress)
    if epochs is not None:
        settings["epochs"] = epochs
    config = TrainConfig.from_dict(settings, where="the demo settings")
    train_data, test_data = demo_data(config, quick)
    result = train_from_config(config, train_data, test_data)
    model = result.model.eval()
    images, labels = test_data.tensors
    report = network_report(model, images)
    radii = certified_radii(model, images, labels, report, reference="float64")
    upper = float(report)
    dev = resolve_device(None, model)
    lower = lipschitz_lower_bound(model, images[:32].to(dev), steps=20 if quick else 100,
                                  seed=seed)
    curve = plot_certified_curves(
        {f"{config.model} ({config.epochs} epochs)": radii}, Path(out) / CURVE_FILE,
        f"{config.model} on {config.data}: certified accuracy",
    )
    clean = float((predict_logits(model, images).argmax(1).cpu() == labels).float().mean())
    demo = DemoResult(
        lipschitz_lower=float(lower), lipschitz_upper=upper, clean_accuracy=clean,
        certified=certified_accuracy(radii, REPORT_RADII),
        curve=curve, train=result,
    )
    write_json(Path(out) / "summary.json", demo.to_dict())
    return demo
