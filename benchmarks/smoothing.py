"""Randomized smoothing: lipcert.certify.Smoothed against a one-input-at-a-time reference loop
and ART's lower-bound function, in one run, plus the several-distribution certificate.

1. Base classifiers: the ``lmt-mnist`` plain CNN trained here for a few epochs on the embedded
   mnist-5k with Gaussian noise augmentation (``train(..., noise="gaussian:SIGMA")``) at
   sigma 0.25, 0.5 and 1.0 (Adam, lr 1e-3, cross-entropy).
2. Certified accuracy at l2 radii 0.25 .. 2.0 on the first P test points (Cohen's CERTIFY,
   n0 = 100, n as given, alpha = 1e-3); the cap of the radius at that n is printed
   (``sigma * Phi^-1(alpha ** (1/n))``: 3.81 sigma at n = 1e5, 3.09 sigma at n = 1e4).
   Laplace (l1) and uniform (l1) curves at sigma 0.5 on the sigma-0.5 model (at equal
   standard deviation).
3. Speed: samples per second of ``Smoothed.certify`` (inputs batched together) against a
   faithful re-implementation of locuslab/smoothing's ``Smooth.certify`` (one input at a time,
   ``x.repeat`` + ``randn_like`` per batch, counting in a Python loop, statsmodels'
   ``proportion_confint``), same model, same batch size, at n = 100, 1,000 and 10,000;
   min of 3 repeats interleaved.
4. ART (adversarial-robustness-toolbox, if installed): on the counts lipcert produced, the
   radius from ART's own ``RandomizedSmoothingMixin._lower_confidence_bound`` and its
   ``scale * norm.ppf`` formula, against lipcert's radius (max relative difference).
5. The several-distribution certificate (arXiv 2206.01715) on the sigma-0.5 model with probes
   0.4 and 0.6 (alpha split 3 ways; n samples per distribution): median and best radius gain
   over Cohen's radius from the same corrected bound, the fraction of points where a probe
   helps, and seconds per point of ``multi_sigma_radius``; the same on the 8x8 digits
   (d = 64, lmt-mnist trained with gaussian:0.25, probes 0.2 and 0.3). Then a synthetic sweep
   of the gain
   against dimension and sigma ratio at fixed lower bounds, showing where it vanishes.

Run: ``python benchmarks/smoothing.py`` (about 14 minutes on 2 loaded CPU cores; ``--quick``
for a smoke run that writes nothing). Writes benchmarks/results/smoothing.json and
smoothing.png (certified-accuracy curves).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from lipcert import data, models
from lipcert.certify import Smoothed, certified_accuracy, cohen_radius, multi_sigma_radius
from lipcert.losses import build_loss
from lipcert.report import format_table, new_figure, save_figure, write_json
from lipcert.train import train

RESULTS = Path(__file__).resolve().parent / "results"
SIGMAS = (0.25, 0.5, 1.0)
RADII = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
ALPHA = 0.001


# --------------------------------------------------------------------------- reference loop
def _count_arr(arr: np.ndarray, length: int) -> np.ndarray:
    counts = np.zeros(length, dtype=int)
    for idx in arr:
        counts[idx] += 1
    return counts


def reference_certify(model, x, num_classes, sigma, n0, n, alpha, batch):
    """locuslab/smoothing ``Smooth.certify`` re-implemented one input at a time (device taken
    from the input instead of their hard-coded CUDA)."""
    from statsmodels.stats.proportion import proportion_confint

    def sample_noise(xi, num):
        with torch.no_grad():
            counts = np.zeros(num_classes, dtype=int)
            remaining = num
            while remaining > 0:
                this = min(batch, remaining)
                remaining -= this
                b = xi.repeat((this, 1, 1, 1))
                noise = torch.randn_like(b) * sigma
                predictions = model(b + noise).argmax(1)
                counts += _count_arr(predictions.cpu().numpy(), num_classes)
            return counts

    out = []
    for xi in x:
        c_a = sample_noise(xi, n0).argmax().item()
        counts = sample_noise(xi, n)
        n_a = counts[c_a].item()
        p_a = proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]
        out.append((-1, 0.0) if p_a < 0.5 else (c_a, sigma * norm.ppf(p_a)))
    return out


# --------------------------------------------------------------------------- helpers
def train_noisy(sigma: float, epochs: int, train_set, test_set, seed: int = 0):
    torch.manual_seed(seed)
    model = models.build("lmt-mnist")
    train(model, train_set, test_set, build_loss("ce"), epochs, lr=1e-3, optimizer="adam",
          schedule="constant", seed=seed, batch_size=128, certify=False, progress=False,
          noise=f"gaussian:{sigma}")
    return model.eval()


def art_radius(counts_a: np.ndarray, n: int, alpha: float, sigma: float) -> np.ndarray | None:
    """ART's radius from its own lower-bound function (None when ART is not importable)."""
    if importlib.util.find_spec("art") is None:
        return None
    from art.estimators.certification.randomized_smoothing.randomized_smoothing import (
        RandomizedSmoothingMixin,
    )

    fake = types.SimpleNamespace(alpha=alpha)
    out = []
    for k in counts_a:
        p = RandomizedSmoothingMixin._lower_confidence_bound(fake, int(k), n)
        out.append(0.0 if p < 0.5 else sigma * norm.ppf(p))
    return np.array(out)


def timed(fn, repeats: int):
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def speed_section(cnn, x_all, args, report) -> None:
    """Samples per second of Smoothed.certify and the reference loop: CPU seconds of this
    process (robust to other jobs on a shared machine; both run on one torch thread) and wall
    seconds, min of 3 interleaved repeats each."""
    # The lmt-mnist CNN (forward-bound on a CPU) and a 784-100-10 MLP (untrained; cheap
    # forwards, so the per-input overheads of the reference loop show).
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(),
                              torch.nn.Linear(100, 10)).eval()
    rows, report["speed"] = [], []
    for name, model in (("lmt-mnist", cnn), ("mlp 784-100-10", mlp)):
        for n, count in ((100, 40), (1000, 20), (10_000, 4)):
            if args.quick:
                count = 3
            xs = x_all[:count]
            smoothed = Smoothed(model, 10, sigma=0.25)
            best = {"ref": [math.inf, math.inf], "ours": [math.inf, math.inf]}
            for _ in range(3):
                for who in ("ref", "ours"):
                    wall, cpu = time.perf_counter(), time.process_time()
                    if who == "ref":
                        reference_certify(model, xs, 10, 0.25, 100, n, ALPHA, args.batch)
                    else:
                        smoothed.certify(xs, n0=100, n=n, alpha=ALPHA, batch_size=args.batch)
                    best[who][0] = min(best[who][0], time.process_time() - cpu)
                    best[who][1] = min(best[who][1], time.perf_counter() - wall)
            samples = (n + 100) * count
            (c_ref, w_ref), (c_ours, w_ours) = best["ref"], best["ours"]
            rows.append([name, n, count, f"{samples / c_ours:.0f}", f"{samples / c_ref:.0f}",
                         f"{c_ref / c_ours:.2f}", f"{w_ref / w_ours:.2f}"])
            report["speed"].append({
                "model": name, "n": n, "inputs": count,
                "lipcert_samples_per_cpu_s": samples / c_ours,
                "reference_samples_per_cpu_s": samples / c_ref,
                "speedup_cpu": c_ref / c_ours, "speedup_wall": w_ref / w_ours})
    print(f"\nSpeed (n0=100, batch {args.batch}, sigma 0.25, min of 3 interleaved repeats)")
    print(format_table(rows, ["model", "n", "inputs", "lipcert samples/cpu-s",
                              "reference samples/cpu-s", "speed-up (cpu)", "speed-up (wall)"]))


def digits_multi_section(args, report) -> None:
    """The several-distribution certificate in low dimension: lmt-mnist on the 8x8 digits
    (d = 64) trained with gaussian:0.25 noise, probes 0.2 and 0.3, first P test points."""
    torch.manual_seed(0)
    train_set, test_set = data.load("digits", "train"), data.load("digits", "test")
    model = models.build("lmt-mnist", image_size=8)
    train(model, train_set, test_set, build_loss("ce"), 1 if args.quick else 10, lr=1e-3,
          optimizer="adam", schedule="constant", seed=0, batch_size=128, certify=False,
          progress=False, noise="gaussian:0.25")
    model.eval()
    x, y = test_set.tensors
    count = 6 if args.quick else 100
    start = time.perf_counter()
    multi = Smoothed(model, 10, sigma=0.25).certify_multi(
        x[:count], sigmas=(0.2, 0.3), n0=100, n=args.n, alpha=ALPHA, batch_size=args.batch)
    seconds = time.perf_counter() - start
    cohen = multi.extra["radius_cohen"].numpy()
    gain = multi.radius.numpy() - cohen
    ok = multi.prediction.numpy() >= 0
    rel = gain[ok] / np.maximum(cohen[ok], 1e-12)
    summary = {"dim": 64, "points": count, "certified": int(ok.sum()),
               "helped": int((gain > 0).sum()),
               "median_gain": float(np.median(gain[ok])) if ok.any() else 0.0,
               "best_gain": float(gain.max()), "best_relative_gain": float(rel.max())
               if rel.size else 0.0, "seconds": seconds}
    report["multi_sigma_digits"] = summary
    print("\nSeveral-distribution certificate on digits (d = 64, sigma 0.25, probes 0.2 and 0.3)")
    print(format_table([[summary["certified"], summary["helped"], f"{summary['median_gain']:.2e}",
                         f"{summary['best_gain']:.2e}", f"{summary['best_relative_gain']:.2%}",
                         f"{seconds:.0f}"]],
                       ["certified", "helped", "median gain", "best gain", "best rel. gain",
                        "seconds"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--points", type=int, default=40, help="test points per curve")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run, writes nothing")
    parser.add_argument("--only", choices=("speed", "digits"), default=None,
                        help="rerun only one section and update its part of the JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only:
        import json

        path = RESULTS / "smoothing.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        if args.only == "speed":
            train_set, test_set = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
            speed_section(train_noisy(0.25, args.epochs, train_set, test_set),
                          test_set.tensors[0], args, report)
        else:
            digits_multi_section(args, report)
        if not args.quick:
            write_json(path, report)
            print(f"updated {path}")
        return 0
    if args.quick:
        args.epochs, args.points, args.n = 1, 6, 500
    started = time.perf_counter()
    train_set, test_set = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    x_all, y_all = test_set.tensors
    # Points spread over the classes (the embedded split is ordered round-robin by class).
    x, y = x_all[: args.points], y_all[: args.points]
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": 1, "n0": 100, "n": args.n,
                    "alpha": ALPHA, "points": len(y), "epochs": args.epochs}

    # 1. models ------------------------------------------------------------------------------
    trained = {}
    for sigma in SIGMAS:
        t0 = time.perf_counter()
        trained[sigma] = train_noisy(sigma, args.epochs, train_set, test_set)
        with torch.no_grad():
            clean = float((trained[sigma](x_all).argmax(1) == y_all).double().mean())
        print(f"trained lmt-mnist with gaussian:{sigma} noise in {time.perf_counter() - t0:.0f} s"
              f"; clean test accuracy of the base classifier {clean:.3f}", flush=True)
        report.setdefault("models", {})[str(sigma)] = {"clean_accuracy": clean}

    # 2. certified accuracy curves ----------------------------------------------------------
    curves, rows, results = {}, [], {}
    runs = [("gaussian", s, s) for s in SIGMAS] + [("laplace", 0.5, 0.5), ("uniform", 0.5, 0.5)]
    for law, sigma, model_sigma in runs:
        smoothed = Smoothed(trained[model_sigma], 10, sigma=sigma, law=law)
        t0 = time.perf_counter()
        res = smoothed.certify(x, n0=100, n=args.n, alpha=ALPHA, batch_size=args.batch)
        seconds = time.perf_counter() - t0
        results[(law, sigma)] = res
        acc = certified_accuracy(res, [0.0, *RADII], labels=y)
        label = f"{law} {sigma:g} (l{res.norm})"
        cap = float(smoothed_cap(law, sigma, args.n))
        curves[label] = (res.radius, res.prediction == y)
        rows.append([label, *[f"{acc[r]:.3f}" for r in (0.0, *RADII)],
                     f"{float(res.abstained.double().mean()):.3f}", f"{cap:.3f}",
                     f"{(args.n + 100) * len(y) / seconds:.0f}"])
        report.setdefault("curves", []).append({
            "law": law, "sigma": sigma, "norm": res.norm, "radius_cap": cap,
            "abstention_rate": float(res.abstained.double().mean()), "seconds": seconds,
            "certified_accuracy": {str(r): acc[r] for r in (0.0, *RADII)}})
        print(f"certified {label}: {seconds:.1f} s", flush=True)
    headers = ["run", "r=0", *[f"{r:g}" for r in RADII], "abstain", "radius cap", "samples/s"]
    print(f"\nCertified accuracy (Cohen CERTIFY, n0=100, n={args.n}, alpha={ALPHA:g}, "
          f"{len(y)} points)")
    print(format_table(rows, headers))

    # 3. speed against the reference loop ---------------------------------------------------
    speed_section(trained[0.25], x_all, args, report)

    # 4. ART on identical counts ------------------------------------------------------------
    res = results[("gaussian", 0.5)]
    guess = res.prediction.clamp_min(0)
    n_a = res.counts.gather(1, guess[:, None])[:, 0].numpy()
    # Radii of the selected class, including the abstentions (both give 0 there).
    ours = np.where(res.prediction.numpy() >= 0, res.radius.numpy(), 0.0)
    theirs = art_radius(n_a, args.n, ALPHA, 0.5)
    if theirs is None:
        print("\nART: adversarial-robustness-toolbox is not importable; comparison skipped")
        report["art"] = {"available": False}
    else:
        import art

        both = (ours > 0) | (theirs > 0)
        rel = float(np.max(np.abs(ours - theirs)[both] / theirs[both])) if both.any() else 0.0
        same_abstain = bool(np.array_equal(ours > 0, theirs > 0))
        print(f"\nART {art.__version__}: radii on identical counts, max relative difference "
              f"{rel:.2e} (lipcert shrinks radii by 1e-9 for rounding); same abstentions: "
              f"{same_abstain}")
        report["art"] = {"available": True, "version": art.__version__,
                         "max_relative_difference": rel, "same_abstentions": same_abstain}

    # 5. several-distribution certificate ---------------------------------------------------
    smoothed = Smoothed(trained[0.5], 10, sigma=0.5)
    t0 = time.perf_counter()
    multi = smoothed.certify_multi(x, sigmas=(0.4, 0.6), n0=100, n=args.n, alpha=ALPHA,
                                   batch_size=args.batch)
    total = time.perf_counter() - t0
    p_lowers = multi.extra["p_lowers"].numpy()
    per_point = []
    for row in p_lowers:
        if row[0] >= 0.5:
            start = time.process_time()
            multi_sigma_radius(0.5, (0.4, 0.6), row, 784)
            per_point.append(time.process_time() - start)
    gain = (multi.radius - multi.extra["radius_cohen"]).numpy()
    certified = multi.prediction.numpy() >= 0
    rel_gain = gain[certified] / np.maximum(multi.extra["radius_cohen"].numpy()[certified],
                                            1e-12)
    plain = results[("gaussian", 0.5)]
    summary = {
        "probes": [0.4, 0.6], "points": len(y), "certified": int(certified.sum()),
        "helped": int((gain > 0).sum()), "median_gain": float(np.median(gain[certified]))
        if certified.any() else 0.0, "best_gain": float(gain.max()),
        "best_relative_gain": float(rel_gain.max()) if rel_gain.size else 0.0,
        "seconds_per_point_median": statistics.median(per_point) if per_point else 0.0,
        "seconds_per_point_max": max(per_point) if per_point else 0.0,
        "total_seconds": total,
        "median_radius_multi": float(np.median(multi.radius.numpy()[certified]))
        if certified.any() else 0.0,
        "median_radius_cohen_full_alpha": float(np.median(
            plain.radius.numpy()[plain.prediction.numpy() >= 0]))
        if bool((plain.prediction >= 0).any()) else 0.0,
    }
    report["multi_sigma"] = summary
    print("\nSeveral-distribution certificate (sigma 0.5 model, probes 0.4 and 0.6, alpha/3 "
          "each, n per distribution):")
    print(format_table([[summary["certified"], summary["helped"], f"{summary['median_gain']:.2e}",
                         f"{summary['best_gain']:.2e}", f"{summary['best_relative_gain']:.2%}",
                         f"{summary['seconds_per_point_median']:.3f}",
                         f"{summary['seconds_per_point_max']:.3f}"]],
                       ["certified", "helped", "median gain", "best gain", "best rel. gain",
                        "s/point median", "s/point max"]))

    digits_multi_section(args, report)

    # Synthetic sweep: where the gain vanishes.
    sweep_rows = []
    for ratio in (0.8, 0.9, 1.1, 1.2):
        for d in (10, 100, 784, 3072):
            a0 = 0.9
            # a1 just above the closed-form threshold, plus a fixed margin of 0.03
            threshold = float(norm.cdf(norm.ppf(a0) / ratio))
            a1 = min(0.999, threshold + 0.03)
            start = time.process_time()
            r = multi_sigma_radius(0.5, [0.5 * ratio], [a0, a1], d)
            sec = time.process_time() - start
            c = cohen_radius(a0, 0.5)
            sweep_rows.append([ratio, d, f"{a1:.3f}", f"{c:.4f}", f"{r:.4f}",
                               f"{(r - c) / c:.2%}", f"{sec:.3f}"])
            report.setdefault("sweep", []).append({"sigma_ratio": ratio, "dim": d, "a0": a0,
                                                   "a1": a1, "cohen": c, "multi": r,
                                                   "seconds": sec})
    print("\nGain of one probe over Cohen (sigma0 0.5, a0 0.9, a1 = closed-form threshold + "
          "0.03)")
    print(format_table(sweep_rows, ["sigma1/sigma0", "dim", "a1", "Cohen", "multi", "gain",
                                    "seconds"]))

    report["wall_seconds"] = time.perf_counter() - started
    print(f"\nwall time {report['wall_seconds']:.0f} s")
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        write_json(RESULTS / "smoothing.json", report)
        fig, ax = new_figure(6, 4)
        top = 2.2
        grid = torch.linspace(0, top, 400, dtype=torch.float64)
        for label, (radii, correct) in curves.items():
            values = (correct[None, :] & (radii[None, :] > grid[:, None])).double().mean(1)
            values[0] = correct.double().mean()
            ax.plot(grid.numpy(), values.numpy(), label=label)
        ax.set_xlabel("radius (l2 for gaussian, l1 for laplace/uniform; inputs in [0, 1])")
        ax.set_ylabel("certified accuracy")
        ax.set_title(f"lmt-mnist on mnist-5k, n={args.n}, alpha={ALPHA:g}, {len(y)} points",
                     fontsize="medium")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        save_figure(fig, RESULTS / "smoothing.png")
        print(f"wrote {RESULTS / 'smoothing.json'} and smoothing.png")
    return 0


def smoothed_cap(law: str, sigma: float, n: int) -> float:
    """The largest radius n samples can certify (all votes agree)."""
    from lipcert.certify import smoothing_radius

    return smoothing_radius(ALPHA ** (1.0 / n), sigma, law)


if __name__ == "__main__":
    sys.exit(main())
