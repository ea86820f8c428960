"""Structured compact layers: speed against dense layers, and accuracy against weights.

Side by side in one run, on this machine (CPU, one torch thread by default):

1. **Speed.** Forward + backward time per batch of 128 (training mode, input gradient too) of
   a dense ``nn.Linear(n, n)`` and lipcert's ``DiagonalCirculantLinear(n, n)`` (one ``D C``
   factor), ``CirculantLinear``, ``OrthogonalCirculantLinear`` and ``ToeplitzLinear`` for
   ``n`` from 32 to 16384, measured round-robin (one step of each layer per round) so that load
   from other processes hits every layer alike; medians over the rounds. Reports the ratio
   dense / DC and the crossover (the smallest measured ``n`` from which DC is faster).
2. **Accuracy against weights on mnist-5k** (4,000 train / 1,000 test), the same epoch budget,
   seed, batch, optimizer and schedule for every network: dense MLPs of several widths, DCNNs
   (the ``dcnn-s`` recipe, depth 2, 5, 10), Toeplitz networks (``ToeplitzLinear`` layers and
   head, same activation), low-rank networks (each layer a product of two thin dense
   matrices ``U V``, rank r), all trained with cross-entropy; then their Lipschitz-constrained
   versions (``dcnn-lip-s``; normalized Toeplitz; spectrally normalized dense and low-rank
   factors; MaxMin; ``NormalizedLinear`` head) trained with the offset cross-entropy at
   eps = 1 and certified with the sound network bound (pairwise last layer).
3. The paper's weight counts (21K and 49K for 2 and 5 DC layers of 3072 plus a 3072 -> 10
   head; arXiv 1901.10255) reproduced from the layers' own parameters.

Usage: ``python benchmarks/structured.py [--epochs 10] [--rounds 5] [--threads 1]
[--skip-training]``. Writes ``benchmarks/results/structured.json``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lipcert import data, models
from lipcert.layers import (
    CirculantLinear,
    DiagonalCirculantLinear,
    MaxMin,
    NormalizedLinear,
    OrthogonalCirculantLinear,
    SpectralLinear,
    ToeplitzLinear,
)
from lipcert.losses import build_loss
from lipcert.models.structured import LEAKY_SLOPE, structured_mlp
from lipcert.report import format_table, write_json
from lipcert.train import train

RESULTS = Path(__file__).parent / "results"
BATCH = 128
SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SEED = 0
RADII = (0.25, 0.5, 1.0)
TRAIN_EPS = 1.0
FEATURES, CLASSES, WIDTH = 784, 10, 784


# ----------------------------------------------------------------------------- speed
def speed_layers(n: int) -> dict[str, nn.Module]:
    generator = torch.Generator().manual_seed(SEED)
    return {
        "dense": nn.Linear(n, n),
        "dc": DiagonalCirculantLinear(n, n, generator=generator),
        "circulant": CirculantLinear(n, generator=generator),
        "orthogonal-circulant": OrthogonalCirculantLinear(n, generator=generator),
        "toeplitz": ToeplitzLinear(n, n, generator=generator),
    }


def step(layer: nn.Module, x: torch.Tensor, reps: int = 1) -> float:
    """Seconds per forward + backward step, averaged over ``reps`` consecutive steps."""
    start = time.perf_counter()
    for _ in range(reps):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).square().sum().backward()
    return (time.perf_counter() - start) / reps


def time_size(n: int, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` round-robin rounds; each measurement repeats the step until it
    lasts about 50 ms (at most 50 steps), so timer and scheduler noise stay small."""
    layers = speed_layers(n)
    x = torch.randn(BATCH, n, requires_grad=True)
    reps = {}
    for name, layer in layers.items():  # warm-up (FFT plans, allocator), then size the reps
        step(layer, x)
        reps[name] = max(1, min(50, round(0.05 / step(layer, x))))
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(rounds):
        for name, layer in layers.items():
            times[name].append(step(layer, x, reps[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def run_speed(rounds: int) -> dict:
    rows, results = [], {}
    for n in SIZES:
        medians = time_size(n, rounds if n < 8192 else min(rounds, 3))
        results[n] = medians
        rows.append([n, *(f"{medians[k] * 1e3:.3f}" for k in medians),
                     f"{medians['dense'] / medians['dc']:.2f}"])
        print(f"n={n}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in medians.items()),
              flush=True)
    names = list(results[SIZES[0]])
    print(format_table(rows, ["n", *(f"{k} ms" for k in names), "dense/dc"]))
    faster = [n for n in SIZES if results[n]["dc"] < results[n]["dense"]]
    crossover = next((n for n in SIZES if all(m in faster for m in SIZES if m >= n)), None)
    print(f"crossover: DC faster than dense from n = {crossover} on (measured sizes)")
    return {"median_seconds": {str(n): v for n, v in results.items()},
            "dense_over_dc": {str(n): results[n]["dense"] / results[n]["dc"] for n in SIZES},
            "crossover_n": crossover, "batch": BATCH, "rounds": rounds}


# -------------------------------------------------------------------------- training
class LowRankLinear(nn.Sequential):
    """``W = U V`` with ``V: in -> rank`` (no bias) and ``U: rank -> out``; ``lip`` makes both
    factors spectrally normalized (Gram-iteration bound), so ``||U V|| <= 1``."""

    def __init__(self, in_features: int, out_features: int, rank: int, lip: bool = False):
        layer = SpectralLinear if lip else nn.Linear
        super().__init__(layer(in_features, rank, bias=False), layer(rank, out_features))


def unconstrained(family: str, depth: int, size: int) -> Callable[[], nn.Module]:
    """Factories of the networks trained with cross-entropy (``size``: width or rank)."""
    act = lambda: nn.LeakyReLU(LEAKY_SLOPE)  # noqa: E731
    if family == "dcnn":
        return lambda: models.build("dcnn-s", depth=depth)
    if family == "dense":
        return lambda: structured_mlp(features=FEATURES, width=size, depth=depth,
                                      num_classes=CLASSES, first=nn.Linear, hidden=nn.Linear,
                                      head=nn.Linear, activation=act)
    if family == "toeplitz":
        return lambda: structured_mlp(features=FEATURES, width=WIDTH, depth=depth,
                                      num_classes=CLASSES, first=ToeplitzLinear,
                                      hidden=ToeplitzLinear, head=ToeplitzLinear, activation=act)
    low = lambda i, o: LowRankLinear(i, o, size)  # noqa: E731
    return lambda: structured_mlp(features=FEATURES, width=WIDTH, depth=depth,
                                  num_classes=CLASSES, first=low, hidden=low, head=low,
                                  activation=act)


def constrained(family: str, depth: int, size: int) -> Callable[[], nn.Module]:
    """Lipschitz versions: 1-Lipschitz layers, MaxMin, NormalizedLinear head."""
    if family == "dcnn":
        return lambda: models.build("dcnn-lip-s", depth=depth)
    layer = {
        "dense": lambda i, o: SpectralLinear(i, o),
        "toeplitz": lambda i, o: ToeplitzLinear(i, o, normalize=True),
        "lowrank": lambda i, o: LowRankLinear(i, o, size, lip=True),
    }[family]
    width = size if family == "dense" else WIDTH
    return lambda: structured_mlp(features=FEATURES, width=width, depth=depth,
                                  num_classes=CLASSES, first=layer, hidden=layer,
                                  head=NormalizedLinear, activation=MaxMin)


PLAIN = [("dense", 2, 16), ("dense", 2, 64), ("dense", 2, 256), ("dense", 2, 784),
         ("dcnn", 2, 0), ("dcnn", 5, 0), ("dcnn", 10, 0),
         ("toeplitz", 2, 0), ("toeplitz", 5, 0),
         ("lowrank", 2, 2), ("lowrank", 2, 4), ("lowrank", 2, 10)]
LIPSCHITZ = [("dense", 2, 64), ("dense", 2, 256), ("dcnn", 2, 0), ("dcnn", 5, 0),
             ("dcnn", 10, 0), ("toeplitz", 2, 0), ("lowrank", 2, 4), ("lowrank", 2, 10)]


def label(family: str, depth: int, size: int) -> str:
    extra = {"dense": f" w{size}", "lowrank": f" r{size}"}.get(family, "")
    return f"{family} d{depth}{extra}"


def run_training(epochs: int) -> dict:
    train_data, test_data = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    results = {"plain": [], "lipschitz": []}
    for kind, cases in (("plain", PLAIN), ("lipschitz", LIPSCHITZ)):
        for family, depth, size in cases:
            factory = (unconstrained if kind == "plain" else constrained)(family, depth, size)
            torch.manual_seed(SEED)
            model = factory()
            weights = sum(p.numel() for p in model.parameters())
            loss = build_loss("ce") if kind == "plain" else build_loss("margin-ce", eps=TRAIN_EPS)
            start = time.perf_counter()
            run = train(model, train_data, test_data, loss, epochs, lr=0.01, seed=SEED,
                        batch_size=BATCH, eps=TRAIN_EPS, certify=kind == "lipschitz",
                        progress=False)
            seconds = time.perf_counter() - start
            entry = {"model": label(family, depth, size), "family": family, "depth": depth,
                     "size": size, "weights": weights,
                     "test_accuracy": run.history[-1]["test_accuracy"],
                     "train_seconds": seconds}
            if kind == "lipschitz":
                entry.update(certify(model, test_data))
            results[kind].append(entry)
            print(entry, flush=True)
    return results


def certify(model: nn.Module, test_data) -> dict:
    from lipcert.train.batches import dataset_tensors
    from lipcert.train.evaluation import certified_radii, network_report

    images, labels = dataset_tensors(test_data)
    model.eval()
    report = network_report(model, images)
    radii = certified_radii(model, images, labels, report, reference="float64")
    return {"lipschitz_upper": float(report.value),
            **{f"certified@{r:g}": float((radii > r).double().mean()) for r in RADII}}


def weights_to_reach(entries: list[dict], key: str, target: float) -> dict[str, int | None]:
    out = {}
    for family in ("dense", "dcnn", "toeplitz", "lowrank"):
        hits = [e["weights"] for e in entries if e["family"] == family and e[key] >= target]
        out[family] = min(hits) if hits else None
    return out


def print_training(results: dict) -> dict:
    plain = sorted(results["plain"], key=lambda e: e["weights"])
    print(format_table([[e["model"], e["weights"], f"{e['test_accuracy']:.3f}",
                         f"{e['train_seconds']:.1f}"] for e in plain],
                       ["network (CE)", "weights", "test acc", "train s"]))
    lip = sorted(results["lipschitz"], key=lambda e: e["weights"])
    print(format_table([[e["model"], e["weights"], f"{e['test_accuracy']:.3f}",
                         *(f"{e[f'certified@{r:g}']:.3f}" for r in RADII),
                         f"{e['lipschitz_upper']:.3f}"] for e in lip],
                       ["network (Lipschitz)", "weights", "clean",
                        *(f"cert@{r:g}" for r in RADII), "L upper"]))
    summary = {f"weights_for_acc_{t}": weights_to_reach(plain, "test_accuracy", t)
               for t in (0.85, 0.90, 0.93, 0.95)}
    summary.update({f"weights_for_cert@0.5_{t}": weights_to_reach(lip, "certified@0.5", t)
                    for t in (0.5, 0.6)})
    for key, value in summary.items():
        print(f"{key}: {value}")
    return summary


def paper_counts() -> dict:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    hidden, head = count(DiagonalCirculantLinear(3072, 3072)), count(
        DiagonalCirculantLinear(3072, 10))
    counts = {f"{k} layers": k * hidden + head for k in (2, 5)}
    print(f"paper weight counts (3072 DC layers + 3072->10 head): {counts} "
          "(paper: 21K and 49K)")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "threads": args.threads, "processor": platform.processor()},
           "paper_counts": paper_counts()}
    if not args.skip_speed:
        out["speed"] = run_speed(args.rounds)
    if not args.skip_training:
        out["training"] = run_training(args.epochs)
        out["training"]["epochs"] = args.epochs
        out["training"]["summary"] = print_training(out["training"])
    RESULTS.mkdir(exist_ok=True)
    name = "structured.json" if not (args.skip_speed or args.skip_training) else \
        f"structured-{'training' if args.skip_speed else 'speed'}.json"
    write_json(RESULTS / name, out)
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
