"""FGSM and AutoAttack in lipcert against torchattacks, and against the certificates.

Side by side in one run, on the same sll-s model (trained here on mnist-5k) and the same test
points:

- robust accuracy under lipcert's ``fgsm`` and torchattacks' ``FGSM`` (l-infinity; the same
  attack, so the numbers should agree), lipcert's ``pgd`` (margin loss, 50 steps),
  torchattacks' own ``AutoAttack`` class (its "standard" runs 10 iterations per attack) and
  ``lipcert.attacks.autoattack`` (the authors' standard budget: 100 iterations, 5,000 Square
  queries), at l-infinity 0.1 and l2 1.0;
- the soundness cross-check: l2 certified accuracy (``lipschitz_radii``) must not exceed the
  robust accuracy under any l2 attack at the same radius.

Needs ``pip install --no-deps torchattacks scipy``. Usage:
``python benchmarks/autoattack.py [--points 100] [--epochs 5]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch

from lipcert import data, models
from lipcert.attacks import autoattack, fgsm, pgd, predict
from lipcert.certify import certified_accuracy, lipschitz_radii
from lipcert.losses import build_loss
from lipcert.report import format_table, write_json
from lipcert.train import train

RESULTS = Path(__file__).parent / "results"
SETTINGS = ((math.inf, 0.1), (2.0, 1.0))


def trained_model(epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.build("sll-s")
    train_data, test_data = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    result = train(model, train_data, test_data, build_loss("margin-ce", eps=1.0), epochs,
                   seed=0, certify=False, progress=False, device="cpu")
    return result.model.eval()


def attacks(norm: float, eps: float) -> dict:
    """name -> function (model, x, y) -> adversarial batch."""
    import torchattacks

    name = "Linf" if norm == math.inf else "L2"
    table = {
        "lipcert pgd (margin, 50 steps)": lambda m, x, y: pgd(m, x, y, eps, norm=norm, steps=50,
                                                              seed=0),
        "torchattacks AutoAttack class (10 iterations)": lambda m, x, y: torchattacks.AutoAttack(
            m, norm=name, eps=eps, version="standard", n_classes=10, seed=0)(x, y),
        "lipcert autoattack (standard, 100 iterations)": lambda m, x, y: autoattack(
            m, x, y, eps, norm=norm, seed=0),
    }
    if norm == math.inf:
        table = {"lipcert fgsm": lambda m, x, y: fgsm(m, x, y, eps, norm=norm, loss="ce"),
                 "torchattacks FGSM": lambda m, x, y: torchattacks.FGSM(m, eps=eps)(x, y),
                 **table}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = trained_model(args.epochs)
    x, y = data.load("mnist-5k", "test").tensors
    x, y = x[: args.points], y[: args.points]
    clean = predict(model, x) == y
    radii = lipschitz_radii(model, x, y)
    rows, records = [], []
    for norm, eps in SETTINGS:
        certified = certified_accuracy(radii, [eps])[eps] if norm == 2.0 else None
        for name, attack in attacks(norm, eps).items():
            started = time.perf_counter()
            x_adv = attack(model, x[clean], y[clean])
            seconds = time.perf_counter() - started
            x_adv = x_adv.detach()  # torchattacks returns tensors that require grad
            delta = (x_adv - x[clean]).flatten(1)
            size = float(delta.abs().amax() if norm == math.inf else delta.norm(dim=1).max())
            robust = int((predict(model, x_adv) == y[clean]).sum()) / len(y)
            records.append({"norm": norm, "eps": eps, "attack": name, "robust_accuracy": robust,
                            "seconds": seconds, "largest_perturbation": size,
                            "certified_accuracy": certified})
            rows.append([f"l{'inf' if norm == math.inf else 2}", eps, name, robust,
                         "" if certified is None else certified, size, seconds])
            print(rows[-1], flush=True)
    print(format_table(rows, ["norm", "eps", "attack", "robust acc", "certified acc",
                              "largest perturbation", "seconds"]))
    sound = all(r["certified_accuracy"] is None or r["certified_accuracy"] <= r["robust_accuracy"]
                for r in records)
    print(f"certified <= robust under every l2 attack: {sound}")
    write_json(RESULTS / "autoattack.json", {
        "points": args.points, "epochs": args.epochs,
        "clean_accuracy": float(clean.double().mean()),
        "machine": f"{platform.machine()}, 1 torch thread, torch {torch.__version__}",
        "rows": records, "certified_below_robust": sound,
    })


if __name__ == "__main__":
    main()
