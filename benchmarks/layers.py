"""1-Lipschitz convolution layers: training-step time and the operator norm they achieve.

Side by side in one run, on this machine (CPU): forward + backward time per batch (batch 128,
28x28 and 32x32 inputs, ``--width`` channels in and out, 3x3 kernels, training mode, with
the input's gradient computed as for any layer inside a network) of

- a plain ``nn.Conv2d`` (the reference for the "<= 3x" target),
- lipcert's ``SLLConv2d``, ``CPLConv2d``, ``AOLConv2d``, ``SpectralConv2d``, ``CayleyConv2d``,
- deel-torchlip's ``SpectralConv2d`` (``pip install --no-deps deel-torchlip``; skipped with a
  message when it is not installed),

measured round-robin (one step of each layer per round) so that load from other processes
hits every layer alike; medians over the rounds. For each normalized convolution it also
reports the operator norm it actually achieves on 32x32 inputs (closer to 1 wastes less
capacity) as a bracket: a lower bound from 150 power-iteration steps on the layer itself
(black box: ``A v = f(v) - f(0)``, adjoint by autograd; every Rayleigh quotient is below the
true norm) and, for lipcert layers, the sound upper bound ``lipschitz_bound``. For SLL and
CPL, which are residual, it reports the fraction of the 1-Lipschitz budget their step uses
(``||D^{1/2} A||^2``, 1 = the full step the guarantee allows).

Usage: ``python benchmarks/layers.py [--width 32] [--rounds 5] [--threads 1]``
Writes ``benchmarks/results/layers.json``.
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
from torch.nn.utils import parametrize

from lipcert.layers import AOLConv2d, CayleyConv2d, CPLConv2d, SLLConv2d, SpectralConv2d
from lipcert.layers._schur import safe_reciprocal
from lipcert.report import format_table, write_json

RESULTS = Path(__file__).parent / "results"
BATCH = 128
SIZES = (28, 32)
NORM_SIZE = 32
POWER_STEPS = 150


def deel_spectral_conv() -> Callable[[int, int], nn.Module] | None:
    """deel-torchlip's SpectralConv2d factory, or None (with a message) if not installed."""
    try:
        from deel.torchlip import SpectralConv2d as DeelSpectralConv2d
    except ImportError as err:
        print(f"deel-torchlip not available ({err}); skipping the peer. "
              "Install it with: pip install --no-deps deel-torchlip")
        return None
    return lambda width, size: DeelSpectralConv2d(width, width, 3, padding=1)


def layer_factories(width: int) -> dict[str, Callable[[int], nn.Module]]:
    """name -> factory(input size) for every layer in the comparison."""
    factories: dict[str, Callable[[int], nn.Module]] = {
        "nn.Conv2d (plain)": lambda size: nn.Conv2d(width, width, 3, padding=1),
        "lipcert SLLConv2d": lambda size: SLLConv2d(width, width, 3),
        "lipcert CPLConv2d": lambda size: CPLConv2d(width, width, 3),
        "lipcert AOLConv2d": lambda size: AOLConv2d(width, width, 3, padding=1),
        "lipcert SpectralConv2d": lambda size: SpectralConv2d(width, width, 3, padding=1,
                                                              input_size=size),
        "lipcert CayleyConv2d": lambda size: CayleyConv2d(width, width, 3),
    }
    deel = deel_spectral_conv()
    if deel is not None:
        factories["deel-torchlip SpectralConv2d"] = lambda size: deel(width, size)
    return factories


def train_step(layer: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward + backward pass."""
    start = time.perf_counter()
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).square().mean().backward()
    return time.perf_counter() - start


def time_layers(factories: dict, width: int, rounds: int) -> list[dict]:
    rows = []
    for size in SIZES:
        torch.manual_seed(0)
        layers = {name: make(size).train() for name, make in factories.items()}
        # As for any layer inside a network, the input needs a gradient too.
        x = torch.randn(BATCH, width, size, size, requires_grad=True)
        times: dict[str, list[float]] = {name: [] for name in layers}
        for layer in layers.values():  # warm-up (allocations, power-vector start)
            train_step(layer, x)
        for _ in range(rounds):
            for name, layer in layers.items():
                times[name].append(train_step(layer, x))
        plain = statistics.median(times["nn.Conv2d (plain)"])
        for name, samples in times.items():
            median = statistics.median(samples)
            rows.append({"layer": name, "input": size, "median_ms": 1e3 * median,
                         "ratio_vs_plain": median / plain})
        deel = [r for r in rows if r["input"] == size and r["layer"].startswith("deel")]
        for row in rows:
            if row["input"] == size and deel:
                row["ratio_vs_deel"] = row["median_ms"] / deel[0]["median_ms"]
    return rows


def power_norm(apply: Callable, adjoint: Callable, shape: tuple[int, ...],
               steps: int = POWER_STEPS) -> float:
    """Lower bound on ||A|| from power iteration (Rayleigh quotients never exceed it)."""
    vector = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    best = 0.0
    for _ in range(steps):
        vector = vector / vector.norm()
        image = apply(vector)
        best = max(best, float(image.norm()))
        vector = adjoint(image)
    return best


def black_box_norm(layer: nn.Module, shape: tuple[int, ...]) -> float:
    """Power-iteration lower bound on the norm of an affine layer's linear part."""
    zero = torch.zeros(shape, dtype=torch.float64)
    with torch.no_grad():
        offset = layer(zero)

    def apply(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return layer(v) - offset

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        x = zero.clone().requires_grad_(True)
        return torch.autograd.grad(layer(x), x, u)[0]

    return power_norm(apply, adjoint, shape)


def residual_budget(layer: SLLConv2d | CPLConv2d, shape: tuple[int, ...]) -> float:
    """``||D^{1/2} A||^2`` for the layer's step ``x - 2 A^* D relu(A x + b)`` (eval mode)."""
    with torch.no_grad():
        if isinstance(layer, SLLConv2d):
            scale = layer.inverse_t().view(1, -1, 1, 1)
        else:
            scale = safe_reciprocal(layer.certified_norm(shape) ** 2)
        root = scale.sqrt()
        norm = power_norm(lambda v: root * layer.apply_map(v),
                          lambda u: layer.apply_adjoint(root * u), shape)
    return norm ** 2


def achieved_norms(factories: dict, width: int) -> list[dict]:
    rows = []
    shape = (1, width, NORM_SIZE, NORM_SIZE)
    for name, make in factories.items():
        if name.startswith("nn.Conv2d"):
            continue
        torch.manual_seed(0)
        layer = make(NORM_SIZE).double()
        layer.train()(torch.randn(shape, dtype=torch.float64))  # initialise any state
        layer.eval()
        row = {"layer": name, "input": NORM_SIZE}
        if isinstance(layer, SLLConv2d | CPLConv2d):
            row["budget_used"] = residual_budget(layer, shape)
        else:
            with parametrize.cached():  # the weight is fixed: normalize it once
                row["norm_lower"] = black_box_norm(layer, shape)
        if hasattr(layer, "lipschitz_bound"):
            bound = layer.lipschitz_bound(shape)
            row["upper"] = float(bound)
            row["upper_guarantee"] = bound.guarantee
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 keeps timings stable on a shared machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    factories = layer_factories(args.width)
    started = time.perf_counter()
    timing = time_layers(factories, args.width, args.rounds)
    norms = achieved_norms(factories, args.width)
    print(f"Training step (forward + backward), batch {BATCH}, width {args.width}, "
          f"median of {args.rounds} interleaved rounds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(format_table(
        [[r["layer"], r["input"], f"{r['median_ms']:.1f}", f"{r['ratio_vs_plain']:.2f}",
          f"{r['ratio_vs_deel']:.2f}" if "ratio_vs_deel" in r else "-"] for r in timing],
        ["layer", "input", "ms/step", "x plain conv", "x deel spectral"]))
    print(f"\nOperator norm achieved at {NORM_SIZE}x{NORM_SIZE} (lower: {POWER_STEPS} power "
          "steps on the layer; upper: lipschitz_bound)")
    print(format_table(
        [[r["layer"], f"{r['norm_lower']:.4f}" if "norm_lower" in r else "-",
          f"{r['budget_used']:.4f}" if "budget_used" in r else "-",
          f"{r['upper']:.4f} ({r['upper_guarantee']})" if "upper" in r else "-"]
         for r in norms],
        ["layer", "norm (lower)", "residual budget used", "lipschitz_bound"]))
    write_json(RESULTS / "layers.json", {
        "machine": {"processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "batch": BATCH, "width": args.width, "rounds": args.rounds,
        "timing": timing, "norms": norms,
        "seconds": time.perf_counter() - started,
    })


if __name__ == "__main__":
    main()
