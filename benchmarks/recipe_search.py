"""Recipe search for certified training on a validation split of mnist-5k (never the test split).

Each stage varies one group of settings around ``BASE`` (``sll-s``, margin cross-entropy,
Adam with the triangular schedule, 20 epochs, batch 128): the loss offset and temperature,
the learning rate, the architecture (width / depth / dense width, with the time per training
step measured round-robin against ``BASE``'s model in the same run), augmentation and the
optimizer. The data are :func:`lipcert.data.validation_split` of the mnist-5k training split
(20% of each class held out, 3200 / 800 images); certified accuracy is measured on the held-out
part with the sound network bound and the per-pair last-layer radii.

Usage: ``python benchmarks/recipe_search.py --stage offset [--stage lr ...] [--seeds 0 1]``;
prints a table per stage and writes ``benchmarks/results/recipe_search_<stage>.json``.
Stages: see ``STAGES``. Runs with one torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lipcert import data, models
from lipcert.certify import certified_accuracy
from lipcert.losses import build_loss
from lipcert.report import format_table, write_json
from lipcert.train import train
from lipcert.train.evaluation import certified_radii, network_report

sys.path.insert(0, str(Path(__file__).parent))
from certified_training import Entry, interleaved_step_seconds  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RADII = (0.5, 1.0, 1.58)
VAL_FRACTION = 0.2
SQRT2 = math.sqrt(2.0)

BASE: dict[str, Any] = dict(model="sll-s", args={}, offset=1.5 * SQRT2, temperature=0.25,
                            lr=0.01, optimizer="adam", schedule="triangular", augment=None,
                            epochs=20, batch_size=128)
"""The starting recipe (today's ``lipcert demo`` loss and optimizer at 20 epochs)."""


STAGED = dict(BASE, model="sll-m", offset=2 * SQRT2)
"""The two-stage ``sll-m`` recipe (space-to-depth instead of norm pooling) with offset 2 sqrt 2;
the ``staged-*`` stages vary settings around it."""


def _vary(base: dict[str, Any] = BASE, **changes: list[Any]) -> list[dict[str, Any]]:
    """``base`` with one setting changed per entry (``changes`` maps a key to its values)."""
    return [dict(base, **{key: value}) for key, values in changes.items() for value in values]


def _arch(*sizes: tuple[int, int, int, int], base: dict[str, Any] = BASE
          ) -> list[dict[str, Any]]:
    return [dict(base, args=dict(width=w, depth=d, dense_width=dw, dense_depth=dd))
            for w, d, dw, dd in sizes]


STAGES: dict[str, list[dict[str, Any]]] = {
    "offset": _vary(offset=[SQRT2, 1.5 * SQRT2, 2 * SQRT2, 2.5 * SQRT2]),
    "temperature": _vary(temperature=[0.125, 0.25, 0.5, 1.0]),
    "lr": _vary(lr=[0.003, 0.01, 0.02, 0.04]),
    "arch": _arch((16, 2, 128, 2), (16, 4, 128, 2), (16, 2, 256, 2), (16, 4, 256, 2),
                  (16, 2, 512, 2), (24, 2, 256, 2), (32, 2, 256, 2), (16, 3, 256, 3)),
    "augment": _vary(augment=[None, "crop:1", "crop:2"]),
    "optimizer": [BASE, dict(BASE, optimizer="adamw"),
                  dict(BASE, optimizer="schedulefree", schedule="constant", lr=0.005),
                  dict(BASE, optimizer="schedulefree", schedule="constant", lr=0.01),
                  dict(BASE, schedule="cosine")],
    "staged-offset": _vary(STAGED, offset=[1.5 * SQRT2, 2 * SQRT2, 2.5 * SQRT2]),
    "staged-arch": [STAGED, *_arch((8, 2, 256, 2), (12, 2, 128, 2), (8, 3, 128, 2), (8, 2, 128, 3),
                           base=STAGED)],
    "staged-train": [STAGED, *_vary(STAGED, lr=[0.02], temperature=[0.5], augment=["crop:1"]),
                     dict(STAGED, optimizer="schedulefree", schedule="constant", lr=0.005)],
}


def describe(config: dict[str, Any]) -> str:
    """A short name: the recipe, the offset, and the other settings that differ from ``BASE``."""
    parts = []
    for key, value in config.items():
        if value == BASE[key] and key not in ("model", "offset"):
            continue
        if key == "args":
            parts.append("/".join(f"{k[0] if k != 'dense_width' else 'dw'}"
                                  f"{'d' if k == 'dense_depth' else ''}{v}"
                                  for k, v in value.items()))
        elif key == "offset":
            parts.append(f"offset {value / SQRT2:g} sqrt2")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def run_config(config: dict[str, Any], seed: int, train_part, val_part) -> dict[str, Any]:
    model = models.build(config["model"], seed=seed, **config["args"])
    loss = build_loss("margin-ce", eps=1.0, offset=config["offset"],
                      temperature=config["temperature"])
    started = time.perf_counter()
    result = train(model, train_part, val_part, loss, config["epochs"], lr=config["lr"],
                   optimizer=config["optimizer"], schedule=config["schedule"], seed=seed,
                   batch_size=config["batch_size"], augment=config["augment"], certify=False,
                   eval_every=config["epochs"], progress=False, device="cpu")
    seconds = time.perf_counter() - started
    model = result.model.eval()
    images, labels = val_part.tensors
    report = network_report(model, images)
    radii = certified_radii(model, images, labels, report)
    with torch.no_grad():
        clean = float((model(images).argmax(1) == labels).double().mean())
    table = certified_accuracy(radii, list(RADII))
    return {"clean": clean, **{f"cert@{eps:g}": table[eps] for eps in RADII},
            "lipschitz_upper": float(report), "train_seconds": seconds,
            "parameters": sum(p.numel() for p in model.parameters())}


def step_ratios(configs: list[dict[str, Any]], images: torch.Tensor,
                labels: torch.Tensor) -> list[float]:
    """Seconds per training step of each config's model over ``BASE``'s, timed round-robin."""
    loss = build_loss("margin-ce", eps=1.0)
    entries = [Entry(str(i), "lipcert",
                     lambda c=c: models.build(c["model"], seed=0, **c["args"]),
                     lambda: loss, c["lr"], c["schedule"])
               for i, c in enumerate([BASE, *configs])]
    seconds = interleaved_step_seconds(entries, images, labels, rounds=5)
    return [seconds[str(i + 1)] / seconds["0"] for i in range(len(configs))]


def run_stage(stage: str, seeds: list[int], epochs: int | None) -> list[dict[str, Any]]:
    configs = [dict(c, epochs=epochs or c["epochs"]) for c in STAGES[stage]]
    train_part, val_part = data.validation_split(data.load("mnist-5k", "train"), VAL_FRACTION)
    x, y = train_part.tensors
    ratios = (step_ratios(configs, x[:BASE["batch_size"]], y[:BASE["batch_size"]])
              if stage.endswith("arch") else [None] * len(configs))
    rows = []
    for config, ratio in zip(configs, ratios, strict=True):
        runs = [run_config(config, seed, train_part, val_part) for seed in seeds]
        row = {"name": describe(config), "config": config, "seeds": seeds, "runs": runs,
               "step_time_ratio": ratio}
        for key in ("clean", *[f"cert@{eps:g}" for eps in RADII]):
            values = [r[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_spread"] = (max(values) - min(values)) / 2
        rows.append(row)
        print(f"{row['name']}: clean {row['clean']:.3f} " + " ".join(
            f"{eps:g}: {row[f'cert@{eps:g}']:.3f}" for eps in RADII)
            + f" ({statistics.fmean(r['train_seconds'] for r in runs):.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", choices=list(STAGES), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the 20 epochs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for stage in args.stage:
        rows = run_stage(stage, args.seeds, args.epochs)
        headers = ["recipe", "params", "clean", *[f"cert@{e:g}" for e in RADII],
                   "step time / base"]
        print(format_table([[r["name"], r["runs"][0]["parameters"], r["clean"],
                             *[r[f"cert@{e:g}"] for e in RADII], r["step_time_ratio"]]
                            for r in rows], headers))
        path = RESULTS / f"recipe_search_{stage}.json"
        write_json(path, {"data": f"mnist-5k train, validation_split {VAL_FRACTION}",
                          "threads": args.threads, "base": BASE, "rows": rows})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
