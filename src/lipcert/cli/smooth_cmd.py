"""``lipcert smooth CHECKPOINT --sigma ...``: certified accuracy by randomized smoothing."""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from lipcert.cli._common import (
    add_data_flags,
    add_plot_flag,
    check_radii,
    run_title,
    write_results,
)
from lipcert.errors import BadInputError
from lipcert.noise import NOISE_LAWS

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
NORM_NAMES = {"2": "l2", "1": "l1", "inf": "l-inf"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "smooth", help="certified accuracy of a checkpoint by randomized smoothing",
        description="Certify every point of the data set with randomized smoothing (Cohen et "
        "al. 2019, arXiv 1902.02918): n0 selection samples, n estimation samples, a "
        "Clopper-Pearson bound at alpha. Gaussian noise certifies l2 radii, Laplace l1, uniform "
        "l1 (and l-inf in the JSON). --multi-sigma adds the several-distribution certificate "
        "(arXiv 2206.01715). --batch-size is the number of noisy samples per forward pass. "
        "Each certificate holds with probability 1 - alpha.",
    )
    add_data_flags(parser, batch_size=1000)
    for action in parser._actions:  # the shared flag counts noisy samples here, not points
        if action.dest == "batch_size":
            action.help = "noisy samples per forward pass (default 1000)"
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.25], metavar="SIGMA",
                        help="noise standard deviation(s), pixels in [0, 1] (default 0.25)")
    parser.add_argument("--law", nargs="+", choices=NOISE_LAWS, default=["gaussian"],
                        help="noise law(s) (default gaussian)")
    parser.add_argument("--n0", type=int, default=100, metavar="N",
                        help="selection samples per input (default 100)")
    parser.add_argument("--n", type=int, default=10_000, metavar="N",
                        help="estimation samples per input (default 10000; Cohen et al. use "
                        "100000)")
    parser.add_argument("--alpha", type=float, default=0.001,
                        help="failure probability of each certificate (default 0.001)")
    parser.add_argument("--multi-sigma", type=float, nargs="+", default=None, metavar="SIGMA",
                        help="probe standard deviations for the several-distribution "
                        "certificate of each Gaussian --sigma (alpha split over them)")
    parser.add_argument("--radii", type=float, nargs="+", default=list(DEFAULT_RADII),
                        metavar="R", help="radii of the certified-accuracy table (default "
                        "0 0.25 ... 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    add_plot_flag(parser, "the certified-accuracy curves (one per law and sigma)")
    parser.set_defaults(func=run_smooth)


def check_smooth_args(args: argparse.Namespace) -> list[tuple[str, float, tuple[float, ...]]]:
    """Every range check, before any work; returns the (law, sigma, probes) runs."""
    from lipcert.certify.smoothing import min_samples
    from lipcert.noise import check_noise

    for name in ("n0", "n"):
        if getattr(args, name) < 1:
            raise BadInputError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not (math.isfinite(args.alpha) and 0 < args.alpha < 1):
        raise BadInputError(f"--alpha must lie in (0, 1), got {args.alpha:g}.")
    for sigma in [*args.sigma, *(args.multi_sigma or [])]:
        if not (math.isfinite(sigma) and sigma > 0):
            flag = "--multi-sigma" if sigma not in args.sigma else "--sigma"
            raise BadInputError(f"{flag} takes standard deviations > 0, got {sigma:g}.")
    check_radii(args.radii, "radii")
    laws = list(dict.fromkeys(args.law))
    probes = tuple(dict.fromkeys(args.multi_sigma or ()))
    if probes and "gaussian" not in laws:
        raise BadInputError("--multi-sigma certifies Gaussian smoothing; add --law gaussian.")
    k = 1 + len(probes)
    needed = min_samples(args.alpha / k)
    if args.n < min_samples(args.alpha):
        raise BadInputError(f"n >= {min_samples(args.alpha)} is needed to certify anything at "
                            f"alpha={args.alpha:g} (got --n {args.n}).")
    if probes and args.n < needed:
        raise BadInputError(f"n >= {needed} is needed to certify anything at "
                            f"alpha={args.alpha:g} split over {k} distributions (got --n "
                            f"{args.n}).")
    runs = []
    for law in laws:
        for sigma in dict.fromkeys(args.sigma):
            runs.append((law, check_noise(law, sigma)[1], ()))
            if law == "gaussian" and probes:
                others = tuple(s for s in probes if s != sigma)
                if others:
                    runs.append((law, sigma, others))
    return runs


def run_label(law: str, sigma: float, probes: tuple[float, ...], norm: str) -> str:
    extra = f" +probes {','.join(f'{s:g}' for s in probes)}" if probes else ""
    return f"{law} {sigma:g}{extra} ({NORM_NAMES[norm]})"


def certify_all(smoothed, x: torch.Tensor, probes: tuple[float, ...], args, desc: str):
    """Certify every input in groups (one progress step per input, samples per second)."""
    from lipcert.certify.smoothing import SmoothingResult
    from lipcert.progress import progress_bar

    per_input = args.n * (1 + len(probes)) + args.n0
    group = max(8, args.batch_size // max(1, min(args.n0, args.n)))
    parts: list[SmoothingResult] = []
    started = time.perf_counter()
    bar = progress_bar(total=len(x), desc=desc, unit="input", enabled=args.progress)
    for start in range(0, len(x), group):
        chunk = x[start:start + group]
        common = dict(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                      seed=args.seed, first_index=start)
        if probes:
            parts.append(smoothed.certify_multi(chunk, sigmas=probes, **common))
        else:
            parts.append(smoothed.certify(chunk, **common))
        bar.update(len(chunk))
        rate = per_input * (start + len(chunk)) / (time.perf_counter() - started)
        bar.set_postfix(samples_per_s=f"{rate:.3g}")
    bar.close()
    seconds = time.perf_counter() - started
    return _concat(parts), seconds


def _concat(parts):
    from lipcert.certify.smoothing import SmoothingResult

    first = parts[0]
    return SmoothingResult(
        prediction=torch.cat([p.prediction for p in parts]),
        radius=torch.cat([p.radius for p in parts]), norm=first.norm,
        counts=torch.cat([p.counts for p in parts]),
        p_lower=torch.cat([p.p_lower for p in parts]),
        radii={k: torch.cat([p.radii[k] for p in parts]) for k in first.radii},
        law=first.law, sigma=first.sigma, n0=first.n0, n=first.n, alpha=first.alpha,
        extra={k: torch.cat([p.extra[k] for p in parts]) for k in first.extra
               if k != "sigmas"},
    )


def trained_noise(checkpoint: str) -> str | None:
    from lipcert import models

    extra = models.read_spec(checkpoint).get("extra") or {}
    metrics = extra.get("metrics") or {}
    return metrics.get("noise")


def run_smooth(args: argparse.Namespace) -> int:
    from lipcert.certify import Smoothed, certified_accuracy
    from lipcert.cli.attack_cmd import load_model_and_data
    from lipcert.report import certified_accuracy_figure, format_table, save_figure

    runs = check_smooth_args(args)
    model, x, y = load_model_and_data(args)
    with torch.inference_mode():
        out = model(x[:1])
    if out.dim() != 2:
        raise BadInputError(f"the model must return (batch, classes) logits; it returned shape "
                            f"{tuple(out.shape)}.")
    classes = int(out.shape[1])
    if int(y.max()) >= classes or int(y.min()) < 0:
        raise BadInputError(f"labels must lie in 0..{classes - 1} (the model has {classes} "
                            f"outputs); the data holds {int(y.min())}..{int(y.max())}.")
    noise = trained_noise(args.checkpoint)
    if noise is None:
        print("warning: this checkpoint was trained without noise; the smoothed classifier will "
              "abstain a lot. Train with `lipcert train ... --noise gaussian:SIGMA` at the "
              "sigma you certify.", file=sys.stderr)
    dim = int(x[0].numel())
    rows_acc: dict[str, dict[float, float]] = {}
    curves, summaries = {}, []
    for law, sigma, probes in runs:
        smoothed = Smoothed(model, classes, sigma=sigma, law=law)
        result, seconds = certify_all(smoothed, x, probes, args, f"smooth {law} {sigma:g}")
        label = run_label(law, sigma, probes, result.norm)
        accuracy = certified_accuracy(result, args.radii, labels=y)
        rows_acc[label] = accuracy
        correct = (result.prediction == y.cpu())
        curves[label] = torch.where(correct, result.radius, torch.zeros_like(result.radius))
        samples = (args.n * (1 + len(probes)) + args.n0) * len(y)
        certified = result.radius[correct]
        summary = {
            "law": law, "sigma": sigma, "probes": list(probes), "norm": result.norm,
            "points": len(y), "abstention_rate": float(result.abstained.double().mean()),
            "seconds": seconds, "samples_per_second": samples / seconds,
            "median_radius_correct": float(certified.median()) if certified.numel() else 0.0,
            "certified_accuracy": [{"radius": r, "accuracy": a} for r, a in accuracy.items()],
        }
        if "radius_cohen" in result.extra:
            gain = result.radius - result.extra["radius_cohen"]
            summary["median_gain_over_cohen"] = float(gain[correct].median()) if bool(
                correct.any()) else 0.0
            summary["max_gain_over_cohen"] = float(gain.max())
        if law == "uniform":
            summary["certified_accuracy_linf"] = [
                {"radius": r, "accuracy": a} for r, a in certified_accuracy(
                    _with_norm(result, "inf"), args.radii, labels=y).items()]
        summaries.append(summary)
    labels = list(rows_acc)
    table = [[r, *[f"{rows_acc[lab][r]:.4f}" for lab in labels]] for r in args.radii]
    table.append(["abstain", *[f"{s['abstention_rate']:.4f}" for s in summaries]])
    table.append(["samples/s", *[f"{s['samples_per_second']:.3g}" for s in summaries]])
    print(f"randomized smoothing: n0={args.n0}, n={args.n}, alpha={args.alpha:g}, "
          f"{len(y)} points of dimension {dim}; trained with noise: {noise or 'none'}")
    print(format_table(table, ["radius", *labels], args.table))
    if args.plot:
        title = (run_title(args, "smoothed certified accuracy", len(y))
                 + f"\nn={args.n}, alpha={args.alpha:g} (each radius holds w.p. 1 - alpha)")
        figure = certified_accuracy_figure(curves, marks=args.radii, title=title,
                                           xlabel="radius (inputs in [0, 1])")
        print(f"wrote {save_figure(figure, args.plot)}")
    if args.json:
        write_results(args, {
            "checkpoint": args.checkpoint, "data": args.data_name, "split": args.split,
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed,
            "trained_noise": noise, "runs": summaries,
        })
    return 0


def _with_norm(result, norm: str):
    from dataclasses import replace

    return replace(result, radius=result.radii[norm], norm=norm)
