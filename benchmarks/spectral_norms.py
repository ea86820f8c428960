"""Benchmark of lipcert.linalg: every operator-norm method against an exact or converged value.

Run: ``python benchmarks/spectral_norms.py [--quick]``. Prints tables and writes
``benchmarks/results/spectral_norms.json`` and ``spectral_norms.png`` (gap-vs-iterations of
the Gram iteration against power iteration).

Convolutions: c in {16, 64, 128, 256} (c_in = c_out), k in {3, 5}, n in {8, 16, 32},
padding k // 2, zero and circular padding, random kernels scaled by 1/sqrt(c k^2). The
reference is the exact per-frequency SVD for circular padding and, for zero padding, power
iteration on the true operator (a LOWER bound, so the gaps of upper bounds to it are
over-estimates). PyTorch's ``torch.nn.utils.parametrizations.spectral_norm`` is run on the
same layer and its sigma read off the parametrization. Dense: square float64 matrices up to
2048, reference SVD. Times are medians over a few repeats on whatever CPU runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lipcert.linalg import CONV_METHODS, conv_norm, dense_norm
from lipcert.linalg.gram import gram_iterate, gram_schatten_bound
from lipcert.report import format_table, new_figure, save_figure, write_json

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = (16, 64, 128, 256)
KERNELS = (3, 5)
SIZES = (8, 16, 32)
DENSE_SIZES = (256, 512, 1024, 2048)
# cut to keep the run under 8 minutes: c=256 at n=32 takes 1.5-2 minutes per padding mode
CUTS = {(256, 3, 32), (256, 5, 32), (256, 5, 16)}


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs (one run if it takes over 2 s)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0:
            break
    return statistics.median(times), result


def torch_spectral_norm_sigma(layer: nn.Module, n_power: int) -> float:
    """sigma that PyTorch's spectral_norm divides the weight by, after ``n_power`` steps."""
    original = layer.weight.detach().clone()
    wrapped = spectral_norm(layer, n_power_iterations=n_power)
    wrapped.train()
    normalized = wrapped.weight.detach()
    index = original.abs().argmax()
    return float(original.flatten()[index] / normalized.flatten()[index])


def conv_methods(c: int, k: int) -> dict[str, dict]:
    """Methods run at this size, with their options (cuts keep the run under 8 minutes)."""
    methods = {"exact": {}, "gram": {}, "gram-pruned": {}, "lmt": {}, "singla-feizi": {}}
    if c * (k - 1) <= 128:  # its grid grows as 2^t (k - 1): minutes at c=64, k=5 and above
        methods["gram-kernel"] = {}
    if c * (k - 1) <= 128:  # SVDs on a 32(k-1) x 16(k-1) grid
        methods["toeplitz"] = {}
    methods["power"] = {"n_iter": 200 if c <= 64 else 50}
    return methods


def bench_conv(c: int, k: int, n: int, mode: str, repeats: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.randn(c, c, k, k, generator=generator) / (c * k * k) ** 0.5
    padding = k // 2
    row: dict = {"c": c, "k": k, "n": n, "padding_mode": mode, "methods": {}}
    for method, options in conv_methods(c, k).items():
        seconds, bound = timed(
            lambda m=method, o=options: conv_norm(kernel, n, 1, padding, mode, method=m, **o),
            repeats if method != "power" else 1,
        )
        row["methods"][method] = {
            "value": float(bound),
            "guarantee": bound.guarantee,
            "seconds": seconds,
            "iterations": bound.iterations,
        }
    layer = nn.Conv2d(c, c, k, padding=padding, padding_mode=mode, bias=False)
    with torch.no_grad():
        layer.weight.copy_(kernel)
    seconds, sigma = timed(lambda: torch_spectral_norm_sigma(layer, 30), 1)
    row["methods"]["torch-spectral_norm"] = {
        "value": sigma,
        "guarantee": "reshape estimate",
        "seconds": seconds,
        "iterations": 30,
    }
    if mode == "circular":
        reference = float(conv_norm(kernel.double(), n, 1, padding, mode, method="exact"))
        kind = "exact (float64)"
    else:
        reference, kind = row["methods"]["power"]["value"], "power (lower bound)"
    row["reference"], row["reference_kind"] = reference, kind
    for entry in row["methods"].values():
        entry["gap"] = entry["value"] / reference - 1.0
    return row


def bench_dense(size: int, repeats: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(size, size, generator=generator, dtype=torch.float64) / size**0.5
    row: dict = {"size": size, "methods": {}}
    for method, options in (("exact", {}), ("gram", {}), ("power", {"n_iter": 100})):
        seconds, bound = timed(lambda m=method, o=options: dense_norm(weight, m, **o), repeats)
        row["methods"][method] = {
            "value": float(bound),
            "guarantee": bound.guarantee,
            "seconds": seconds,
        }
    layer = nn.Linear(size, size, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
    seconds, sigma = timed(lambda: torch_spectral_norm_sigma(layer, 100), 1)
    row["methods"]["torch-spectral_norm"] = {
        "value": sigma,
        "guarantee": "estimate",
        "seconds": seconds,
    }
    reference = row["methods"]["exact"]["value"]
    for entry in row["methods"].values():
        entry["gap"] = entry["value"] / reference - 1.0
    return row


def gram_curve(matrices: torch.Tensor, steps: int, truth: float) -> list[tuple[int, float, float]]:
    """(steps, relative gap, cumulative seconds) of the Gram iteration, one step at a time."""
    curve, log_scale, gram, elapsed = [], None, matrices, 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        gram, log_scale = gram_iterate(gram, 1, log_scale)
        value = float(gram_schatten_bound(gram, log_scale, step).amax())
        elapsed += time.perf_counter() - start
        curve.append((step, value / truth - 1.0, elapsed))
    return curve


def power_curve(weight: torch.Tensor, steps: int, truth: float, seed: int) -> list:
    """(iterations, relative gap (negative: below), cumulative seconds) of power iteration."""
    generator = torch.Generator().manual_seed(seed)
    vec = torch.randn(weight.shape[1], generator=generator, dtype=weight.dtype)
    vec = vec / vec.norm()
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        image = weight @ vec
        sigma = float(image.norm())
        back = weight.T @ image
        vec = back / back.norm()
        curve.append((step, 1.0 - sigma / truth, time.perf_counter() - start))
    return curve


def first_reaching(curve, tolerance: float):
    return next((entry for entry in curve if abs(entry[1]) <= tolerance), None)


def dense_target(size: int, repeats: int, seed: int) -> dict:
    """Time for Gram iteration and power iteration to reach a 1e-6 relative gap."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(size, size, generator=generator, dtype=torch.float64) / size**0.5
    truth = float(torch.linalg.matrix_norm(weight, ord=2))
    gram = gram_curve(weight, 12, truth)
    power = power_curve(weight, 4000, truth, seed)
    result = {"size": size, "truth": truth, "gram_curve": gram, "power_curve": power[::10]}
    gram_hit, power_hit = first_reaching(gram, 1e-6), first_reaching(power, 1e-6)
    if gram_hit:
        result["gram_steps"] = gram_hit[0]
        result["gram_seconds"], _ = timed(
            lambda: dense_norm(weight, "gram", n_iter=gram_hit[0]), repeats
        )
    if power_hit:
        result["power_steps"] = power_hit[0]
        result["power_seconds"], _ = timed(
            lambda: dense_norm(weight, "power", n_iter=power_hit[0]), repeats
        )
    return result


def conv_curve(c: int, k: int, n: int, seed: int) -> dict:
    """Gap curves on one circular convolution: per-frequency Gram vs power on the operator."""
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.randn(c, c, k, k, generator=generator) / (c * k * k) ** 0.5
    kernel = kernel.double()
    truth = float(conv_norm(kernel, n, 1, k // 2, "circular", method="exact"))
    from lipcert.linalg.conv_geometry import conv_geometry
    from lipcert.linalg.conv_spectral import frequency_blocks

    blocks = frequency_blocks(kernel, conv_geometry((k, k), n, 1, k // 2, "circular"))
    gram = gram_curve(blocks.reshape(-1, c, c), 10, truth)
    power = []
    for iterations in (1, 2, 5, 10, 20, 50, 100, 200, 500):
        start = time.perf_counter()
        value = float(
            conv_norm(kernel, n, 1, k // 2, "circular", method="power", n_iter=iterations)
        )
        power.append((iterations, 1.0 - value / truth, time.perf_counter() - start))
    return {"c": c, "k": k, "n": n, "truth": truth, "gram_curve": gram, "power_curve": power}


def pruning_demo(c: int, k: int, n: int, repeats: int, seed: int) -> dict:
    """Frequency pruning on a smooth (low-pass) kernel, where few frequencies can hold the max."""
    from lipcert.linalg.conv_geometry import conv_geometry
    from lipcert.linalg.conv_spectral import frequency_pruned_gram_norm

    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(c, c, 1, 1, generator=generator) / c**0.5
    taps = torch.tensor([1.0, 2.0, 1.0] + [0.0] * (k - 3)) / 4
    kernel = mixing * torch.outer(taps, taps)
    kernel = kernel + 0.05 * torch.randn(c, c, k, k, generator=generator) / (c * k * k) ** 0.5
    geometry = conv_geometry((k, k), n, 1, k // 2, "circular")
    truth = float(conv_norm(kernel.double(), n, 1, k // 2, "circular", method="exact"))
    result = {"c": c, "k": k, "n": n, "truth": truth, "frequencies": n * (n // 2 + 1)}
    for method in ("exact", "gram", "gram-pruned"):
        seconds, bound = timed(
            lambda m=method: conv_norm(kernel, n, 1, k // 2, "circular", method=m), repeats
        )
        result[method] = {"seconds": seconds, "gap": float(bound) / truth - 1.0}
    _, survivors = frequency_pruned_gram_norm(kernel, geometry, n_iter=8, n_probe=2)
    result["survivors"] = survivors
    return result


def plot_curves(dense: dict, conv: dict, path: Path) -> None:
    fig, _ = new_figure(11, 4)
    fig.clear()
    axes = fig.subplots(1, 2)
    for ax, data, title in (
        (axes[0], dense, f"dense {dense['size']}x{dense['size']} float64"),
        (axes[1], conv, f"circular conv c={conv['c']} k={conv['k']} n={conv['n']} float64"),
    ):
        for name, key, marker in (
            ("Gram iteration", "gram_curve", "o-"),
            ("power iteration", "power_curve", ".-"),
        ):
            points = [(it, max(abs(gap), 1e-16)) for it, gap, _ in data[key]]
            ax.loglog(*zip(*points, strict=True), marker, label=name)
        ax.axhline(1e-6, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("iterations")
        ax.set_ylabel("relative gap to the exact norm")
        ax.set_title(title)
        ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="c <= 64 and n <= 16 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    channels = CHANNELS[:2] if args.quick else CHANNELS
    sizes = SIZES[:2] if args.quick else SIZES
    conv_rows = []
    for c in channels:
        for k in KERNELS:
            for n in sizes:
                if (c, k, n) in CUTS:
                    continue
                for mode in ("circular", "zeros"):
                    row = bench_conv(c, k, n, mode, args.repeats, seed=c * 100 + k * 10 + n)
                    conv_rows.append(row)
                    print(
                        f"conv c={c} k={k} n={n} {mode}: "
                        f"{time.perf_counter() - start:.0f}s elapsed",
                        flush=True,
                    )
    dense_rows = [
        bench_dense(size, args.repeats, seed=size)
        for size in (DENSE_SIZES[:2] if args.quick else DENSE_SIZES)
    ]
    target = dense_target(512 if args.quick else 1024, args.repeats, seed=1)
    curve = conv_curve(64, 3, 16, seed=3)
    pruning = pruning_demo(128, 3, 32, args.repeats, seed=4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_curves(target, curve, RESULTS / "spectral_norms.png")
    payload = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "conv": conv_rows,
        "dense": dense_rows,
        "dense_target": target,
        "conv_curve": curve,
        "pruning_smooth_kernel": pruning,
        "cuts": sorted(CUTS),
        "seconds": time.perf_counter() - start,
    }
    write_json(RESULTS / "spectral_norms.json", json.loads(json.dumps(payload)))
    print_tables(payload)


def print_tables(payload: dict) -> None:
    names = [*CONV_METHODS, "torch-spectral_norm"]
    rows = []
    for row in payload["conv"]:
        cells = [row["c"], row["k"], row["n"], row["padding_mode"], f"{row['reference']:.4f}"]
        for name in names:
            entry = row["methods"].get(name)
            cells.append("-" if entry is None else f"{entry['gap']:+.1e} {entry['seconds']:.3f}s")
        rows.append(cells)
    print(format_table(rows, ["c", "k", "n", "padding", "reference"] + names))
    dense_names = ["exact", "gram", "power", "torch-spectral_norm"]
    print(
        format_table(
            [
                [row["size"]]
                + [
                    f"{row['methods'][m]['gap']:+.1e} {row['methods'][m]['seconds']:.3f}s"
                    for m in dense_names
                ]
                for row in payload["dense"]
            ],
            ["size"] + dense_names,
        )
    )
    target = payload["dense_target"]
    print({key: value for key, value in target.items() if not key.endswith("curve")})
    print("pruning on a smooth kernel:", payload["pruning_smooth_kernel"])


if __name__ == "__main__":
    main()
