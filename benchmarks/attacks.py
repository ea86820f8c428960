"""lipcert.attacks against torchattacks, side by side in one run, and the certificate audit.

For the lmt-mnist and sll-s recipes (each trained here for a couple of epochs on the embedded
mnist-5k with Adam and cross-entropy), on the first N mnist-5k test images:

1. PGD l2 and l-infinity at equal eps, steps, step size and random start: robust accuracy
   (lower = stronger attack) of lipcert.attacks.pgd (cross-entropy, the loss torchattacks
   uses, and lipcert's default margin loss) and torchattacks.PGDL2 / PGD, and seconds per
   batch of 100: min and median of 9 repeats interleaved between the libraries (rotating the
   order), so both see the same machine load.
2. The audit: lipcert.certify.lipschitz_radii on 1,000 test points of each model, then
   lipcert.attacks.audit with its DEFAULT settings (PGD, 100 steps at 0.999 r; DeepFool, then
   Carlini-Wagner started at DeepFool's point: minimal method "deepfool+cw"; batches of 64);
   zero violations expected. On sll-s the previous defaults (minimal method "best": DeepFool
   and a 9-round Carlini-Wagner search from x, batches of 256) run interleaved between two
   runs of the defaults, for the time ratio and the tightness comparison. As a control, the
   audit is repeated with every radius inflated to 1.5 x median(minimal distance / radius)
   times itself, where it must report violations.

Targets (issue 7): lipcert's PGD at least as strong (robust accuracy no more than 0.5 points
above torchattacks') at no more time; the audit finds no violation. Issue 14: the default
audit of 1,000 sll-s points in <= 60 s on the 2-core machine, its median tightness within 5%
of the previous defaults'.

torchattacks is installed with ``pip install --no-deps torchattacks`` (its torchvision
requirement would pull a CUDA build of torch); the script records whether it imports.

Run: ``python benchmarks/attacks.py`` (about 12 minutes on 2 loaded CPU cores; ``--quick``
for a smoke run that writes nothing). Writes benchmarks/results/attacks.json and attacks.png
(tightness histograms).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lipcert import data, models
from lipcert.attacks import audit, pgd
from lipcert.certify import lipschitz_radii
from lipcert.report import format_table, new_figure, save_figure, write_json

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("lmt-mnist", "sll-s")
# (norm, eps) per model: l2 radius 1.0 (about 0.036 per pixel on 28x28) and l-inf 0.1
THREATS = ((2.0, 1.0), (math.inf, 0.1))
PLANTED = 1.5  # planted radii: 1.5 x the median minimal adversarial distance (see run_audit)


def torchattacks_status() -> dict:
    """Which parts of torchattacks import in this environment (without torchvision)."""
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    status = {"installed": False, "torchvision": has_torchvision}
    try:
        module = importlib.import_module("torchattacks")
    except Exception as err:  # report exactly what fails
        status["error"] = f"{type(err).__name__}: {err}"
        return status
    status.update(installed=True, version=module.__version__)
    names = ("PGD", "PGDL2", "DeepFool", "CW", "APGD", "FGSM")
    status["classes"] = {name: hasattr(module, name) for name in names}
    return status


def train(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """Plain Adam / cross-entropy training of recipe ``name``, returned in eval mode."""
    torch.manual_seed(seed)
    model = models.build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def compare_pgd(model, x, y, norm, eps, args, torchattacks) -> dict:
    """Robust accuracy over all points and seconds per batch (min and median of interleaved
    repeats on one batch), lipcert (ce, margin) vs torchattacks."""
    steps, alpha = args.steps, 2.5 * eps / args.steps
    if norm == 2.0:
        peer = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    else:
        peer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    runs = {
        "lipcert_ce": lambda xb, yb, i: pgd(model, xb, yb, eps, norm, steps, alpha, seed=i,
                                            loss="ce"),
        "lipcert_margin": lambda xb, yb, i: pgd(model, xb, yb, eps, norm, steps, alpha, seed=i),
        "torchattacks": lambda xb, yb, i: (torch.manual_seed(i), peer(xb, yb))[1],
    }
    robust = dict.fromkeys(runs, 0)
    for i, start in enumerate(range(0, len(y), args.batch_size)):
        xb, yb = x[start : start + args.batch_size], y[start : start + args.batch_size]
        for key, run in runs.items():
            x_adv = run(xb, yb, i)
            size = (x_adv - xb).flatten(1).norm(p=norm, dim=1)
            assert bool((size <= eps * (1 + 1e-5)).all()) and 0 <= x_adv.min() <= x_adv.max() <= 1
            with torch.no_grad():
                robust[key] += int((model(x_adv).argmax(1) == yb).sum())
    seconds = {key: [] for key in runs}
    xb, yb = x[: args.batch_size], y[: args.batch_size]
    for repeat in range(args.repeats):
        for key in list(runs)[repeat % 3 :] + list(runs)[: repeat % 3]:  # rotate the order
            begin = time.perf_counter()
            runs[key](xb, yb, repeat)
            seconds[key].append(time.perf_counter() - begin)
    return {
        key: {"robust_accuracy": robust[key] / len(y), "seconds_min": min(seconds[key]),
              "seconds_median": statistics.median(seconds[key])}
        for key in runs
    }


OLD_SETTINGS = {"minimal_method": "best", "batch_size": 256}  # the defaults before issue 14


def timed_audit(model, x, y, radii, **options):
    begin = time.perf_counter()
    report = audit(model, x, y, radii, **options)
    return report, time.perf_counter() - begin


def run_audit(model, x, y, args, compare: bool) -> tuple[dict, torch.Tensor]:
    """The default audit (seconds: the faster of two runs when ``compare``), with the previous
    defaults run between the two for the time ratio and the tightness comparison."""
    begin = time.perf_counter()
    radii = torch.cat([
        lipschitz_radii(model, x[i : i + 256], y[i : i + 256]) for i in range(0, len(y), 256)
    ])
    certify_seconds = time.perf_counter() - begin
    report, seconds = timed_audit(model, x, y, radii)
    summary = report.summary()
    summary.pop("violating_indices")
    summary.update(seconds=seconds, certify_seconds=certify_seconds, threads=args.threads)
    if compare:
        old, old_seconds = timed_audit(model, x, y, radii, **OLD_SETTINGS)
        again, seconds_again = timed_audit(model, x, y, radii)
        torch.testing.assert_close(again.minimal_distances, report.minimal_distances, rtol=0,
                                   atol=0, equal_nan=True)  # deterministic
        summary["seconds_runs"] = [seconds, seconds_again]
        summary["seconds"] = min(seconds, seconds_again)
        summary["old_settings"] = {
            **OLD_SETTINGS, "seconds": old_seconds, "violations": old.violations,
            "tightness_median": float(old.tightness.median()),
            "time_ratio_old_over_new": old_seconds / summary["seconds"],
            "tightness_median_ratio_new_over_old": summary["tightness_median"]
            / float(old.tightness.median()),
            "points_new_above_old_by_2pct": int(
                (report.tightness > 1.02 * old.tightness).sum()),
        }
    # control: radii inflated to 1.5 x the median empirical robust distance must be refuted
    factor = PLANTED * summary["tightness_median"]
    planted = audit(model, x, y, factor * radii, warn=False)
    summary["planted_factor"] = factor
    summary["planted_violations"] = planted.violations
    summary["median_certified_radius"] = float(radii[radii > 0].median()) if (radii > 0).any() \
        else 0.0
    return summary, report.tightness


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="test points for PGD")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps (both libraries)")
    parser.add_argument("--batch-size", type=int, default=100, help="PGD batch size")
    parser.add_argument("--repeats", type=int, default=9, help="timing repeats per attack")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--audit-points", type=int, default=1000)
    parser.add_argument("--audit-compare", nargs="*", default=["sll-s"], metavar="RECIPE",
                        help="models whose audit is also run with the previous defaults")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.audit_points, args.steps, args.epochs = 50, 50, 5, 1
        args.batch_size, args.repeats = 25, 3
    torch.set_num_threads(args.threads)
    status = torchattacks_status()
    if not status["installed"]:
        print(f"torchattacks does not import: {status.get('error')}", file=sys.stderr)
        return 1
    import torchattacks

    train_x, train_y = data.load("mnist-5k", "train").tensors
    test_x, test_y = data.load("mnist-5k", "test").tensors
    rows, record = [], {}
    figure, axes = new_figure(10, 4)
    figure.delaxes(axes)
    for index, name in enumerate(MODELS):
        begin = time.perf_counter()
        model = train(name, train_x, train_y, args.epochs, seed=0)
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        entry = {"train_seconds": time.perf_counter() - begin, "clean_accuracy": accuracy}
        x, y = test_x[: args.points], test_y[: args.points]
        for norm, eps in THREATS:
            result = compare_pgd(model, x, y, norm, eps, args, torchattacks)
            label = "l2" if norm == 2.0 else "linf"
            entry[f"pgd_{label}"] = {"eps": eps, **result}
            peer = result["torchattacks"]
            for key in ("lipcert_ce", "lipcert_margin"):
                ours = result[key]
                rows.append([
                    name, label, eps, key, f"{ours['robust_accuracy']:.3f}",
                    f"{peer['robust_accuracy']:.3f}",
                    f"{100 * (ours['robust_accuracy'] - peer['robust_accuracy']):+.1f}",
                    f"{ours['seconds_min']:.3f}", f"{peer['seconds_min']:.3f}",
                    f"{ours['seconds_min'] / peer['seconds_min']:.2f}",
                    f"{ours['seconds_median'] / peer['seconds_median']:.2f}",
                ])
        ax = figure.add_subplot(1, len(MODELS), index + 1)
        summary, tightness = run_audit(
            model, test_x[: args.audit_points], test_y[: args.audit_points], args,
            compare=name in args.audit_compare,
        )
        entry["audit"] = summary
        record[name] = entry
        finite = tightness[torch.isfinite(tightness)].numpy()
        ax.hist(finite, bins=40, color="tab:blue")
        ax.axvline(1.0, color="tab:red", linestyle="--")
        ax.set_title(f"{name}: {summary['violations']} violations / {summary['certified']}")
        ax.set_xlabel("minimal adversarial distance / certified radius")
        print(f"{name}: trained in {entry['train_seconds']:.0f} s, clean accuracy "
              f"{accuracy:.3f}; audit: {summary}")
    print(format_table(rows, ["model", "norm", "eps", "lipcert", "robust acc", "torchattacks",
                              "diff (pts)", "s/batch", "peer s/batch", "ratio (min)",
                              "ratio (median)"]))
    audits = []
    for n, r in record.items():
        a, old = r["audit"], r["audit"].get("old_settings", {})
        audits.append([n, a["points"], a["certified"], a["violations"],
                       f"{a['tightness_median']:.4f}", f"{a['tightness_min']:.4f}",
                       f"{a['seconds']:.1f}", a["planted_violations"],
                       f"{old['tightness_median']:.4f}" if old else "-",
                       f"{old['seconds']:.1f}" if old else "-",
                       f"{old['time_ratio_old_over_new']:.2f}" if old else "-"])
    print(format_table(audits, ["model", "points", "certified", "violations", "median ratio",
                                "min ratio", "seconds", "planted violations",
                                "old: median ratio", "old: seconds", "old/new time"]))
    if args.quick:
        return 0
    write_json(RESULTS / "attacks.json", {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": args.threads,
                    "cpus": os.cpu_count()},
        "settings": {k: v for k, v in vars(args).items()},
        "torchattacks": status,
        "models": record,
    })
    save_figure(figure, RESULTS / "attacks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
