"""What the float-rounding allowance of the Lipschitz-margin certificate costs (issue 13).

Side by side in one run, on the embedded mnist-5k test split (1,000 images), for lmt-mnist
(a Conv/Linear/ReLU chain: the allowance is PROVEN) and sll-s (SLL layers: the allowance is
an ESTIMATE), each after 2 epochs of Adam + cross-entropy (the training loop of
benchmarks/bounds.py), in float32:

- ``relative guard`` (before issue 13): margins of the float32 logits, radius divided by
  1 + 100 float32 epsilons, no absolute allowance (unsound at large offsets, see
  tests/certify/test_certify_soundness.py);
- ``lipschitz_radii`` (now): float64 reference copy plus the absolute allowance;
- ``reference="model"``: the same allowance with margins read from the float32 logits;
- the same model converted to float64 (its own rounding is then negligible).

Printed: certified accuracy at 0.5, 1.0, 1.58, median certified radius, the ratio of each
radius to the relative-guard radius, and seconds for the 1,000 points (bound once, then
batches of 250). One CPU thread. Run: ``python benchmarks/certify_rounding.py`` (about 2
minutes). Writes benchmarks/results/certify_rounding.json.
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
import time
from pathlib import Path

import torch

from lipcert import data, models
from lipcert.bounds import lipschitz_bound
from lipcert.certify import certified_accuracy, lipschitz_radii, margin_radii
from lipcert.certify.rounding import RoundingAllowance, forward_with_allowance
from lipcert.report import format_table, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH = 250
EPS = (0.5, 1.0, 1.58)


def _training_loop():
    """benchmarks/bounds.py's ``train`` (one training loop for the benchmarks)."""
    spec = importlib.util.spec_from_file_location("lipcert_bench_bounds", HERE / "bounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train


def relative_guard(model, report, x, y):
    """The pre-issue-13 certificate: float32 margins, only the relative guard."""
    with torch.no_grad():
        logits = model(x)
    zero = torch.zeros(len(x), dtype=torch.float64)
    return margin_radii(logits, report, y, allowance=RoundingAllowance(
        zero, zero, zero, False, logits.dtype))


def timed(fn, x, y):
    began = time.perf_counter()
    radii = torch.cat([fn(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH)])
    return radii, time.perf_counter() - began


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = _training_loop()
    x_train, y_train = data.load("mnist-5k", "train").tensors
    x, y = data.load("mnist-5k", "test").tensors
    rows, results = [], []
    for name in ("lmt-mnist", "sll-s"):
        model = train(models.build(name), x_train, y_train, 2).float()
        report = lipschitz_bound(model, x[:1])
        proven = forward_with_allowance(model, x[:2], float(report), report)[1].proven
        twin = copy.deepcopy(model).double()
        twin_report = lipschitz_bound(twin, x[:1].double())
        variants = {  # defaults bind this iteration's model and reports
            "relative guard (old)": lambda a, b, m=model, r=report: relative_guard(m, r, a, b),
            "lipschitz_radii": lambda a, b, m=model, r=report: lipschitz_radii(m, a, b, bound=r),
            "reference='model'": lambda a, b, m=model, r=report: lipschitz_radii(
                m, a, b, bound=r, reference="model"),
            "float64 model": lambda a, b, m=twin, r=twin_report: lipschitz_radii(
                m, a.double(), b, bound=r),
        }
        base = None
        for label, fn in variants.items():
            seconds = statistics.median(timed(fn, x, y)[1] for _ in range(3))
            radii, _ = timed(fn, x, y)
            accuracy = certified_accuracy(radii, [0.0, *EPS])
            base = radii if base is None else base
            correct = base > 0
            ratio = (radii[correct] / base[correct]).double()
            row = {"model": name, "allowance": "proven" if proven else "estimate",
                   "certificate": label, "seconds": seconds,
                   "median_radius": float(radii[radii > 0].median()),
                   "radius_ratio_median": float(ratio.median()),
                   "radius_ratio_min": float(ratio.min()),
                   "certified_accuracy": {str(e): accuracy[e] for e in EPS},
                   "clean_accuracy": accuracy[0.0]}
            results.append(row)
            rows.append([name, row["allowance"], label, f"{accuracy[0.0]:.3f}",
                         *(f"{accuracy[e]:.3f}" for e in EPS), f"{row['median_radius']:.4f}",
                         f"{row['radius_ratio_median']:.6f}", f"{row['radius_ratio_min']:.6f}",
                         f"{seconds:.2f}"])
            print(f"  {name}: {label} done", flush=True)
    print(format_table(rows, ["model", "allowance", "certificate", "clean",
                              *(f"cert@{e}" for e in EPS), "median r", "r/old median",
                              "r/old min", "seconds"]))
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "certify_rounding.json", {"points": len(y), "batch": BATCH,
                                                   "threads": 1, "rows": results})
    print(f"wrote {RESULTS / 'certify_rounding.json'}")


if __name__ == "__main__":
    main()
