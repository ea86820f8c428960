"""Network Lipschitz bounds and Lipschitz-margin certificates (lipcert.bounds, lipcert.certify).

Side by side in one run, on the embedded mnist-5k (1x28x28):

1. For the model recipes (random init, and lmt-mnist / sll-s after 2 epochs of Adam +
   cross-entropy), a small ResNet-style network (BN, residual blocks, 1x1 shortcut, global
   average pooling) and a single smooth-kernel convolution: the sound upper bound of
   :func:`lipcert.bounds.lipschitz_bound`, the attained lower bound of
   :func:`lipcert.bounds.lipschitz_lower_bound` (8 test images as starts, 50 steps), their
   ratio and the seconds for each; next to it the naive product of PyTorch ``spectral_norm``
   values (sigma of each Linear/Conv weight reshaped to a matrix, read from
   ``torch.nn.utils.parametrizations.spectral_norm`` after 50 power-iteration steps; other
   layers taken as 1), which is NOT a bound: where it falls below the lower bound, it is
   below the true Lipschitz constant.
2. Bound time of a 20-layer SLL-s (20 SLL conv layers; target < 2 s).
3. Certifying the 1,000 mnist-5k test images (bound once + pairwise radii per batch) against
   a plain inference pass over them (target <= 1.2x).

Timings are medians of repeats on one CPU thread (the machine's 2 cores are shared).
Run: ``python benchmarks/bounds.py`` (about 3 minutes). Writes benchmarks/results/bounds.json.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from lipcert import data, models
from lipcert.bounds import lipschitz_bound, lipschitz_lower_bound
from lipcert.certify import certified_accuracy, margin_radii
from lipcert.report import format_table, write_json

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 250


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(h)))


def resnet_style() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def smooth_conv() -> nn.Module:
    """One convolution with a non-negative kernel: its reshaped-matrix norm (what PyTorch's
    spectral_norm divides by) is far below its operator norm (PyTorch issue 99149)."""
    conv = nn.Conv2d(1, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.uniform_(0.0, 1.0)
    return nn.Sequential(conv, nn.Flatten())


def torch_spectral_norm_sigma(layer: nn.Module) -> float:
    """sigma that torch.nn.utils.parametrizations.spectral_norm divides the weight by."""
    plain = copy.deepcopy(layer)
    weight = plain.weight.detach().clone()
    if torch.nn.utils.parametrize.is_parametrized(plain):
        torch.nn.utils.parametrize.remove_parametrizations(plain, "weight")
        with torch.no_grad():
            plain.weight.copy_(weight)
    normalized = parametrizations.spectral_norm(plain, n_power_iterations=50).train()
    return float(weight.norm() / normalized.weight.detach().norm())


def naive_product(model: nn.Module) -> float | None:
    """Product of torch spectral_norm sigmas over Linear/Conv layers; None if the model has
    other weighted layers (SLL, CPL: no such product is defined)."""
    product, plain_types = 1.0, (nn.Linear, nn.Conv1d, nn.Conv2d)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, plain_types):
            product *= torch_spectral_norm_sigma(module)
        elif own and not isinstance(module, (nn.modules.batchnorm._BatchNorm,
                                             torch.nn.utils.parametrize.ParametrizationList)):
            return None
    return product


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def bracket_rows(cases: dict[str, nn.Module], starts: torch.Tensor) -> list[dict]:
    rows = []
    for name, model in cases.items():
        model.eval()
        upper_s, report = median_seconds(lambda m=model: lipschitz_bound(m, starts[:1]), 3)
        lower_s, lower = median_seconds(
            lambda m=model: lipschitz_lower_bound(m, starts, steps=50, seed=0), 1)
        naive = naive_product(model)
        rows.append({"model": name, "upper": float(report), "guarantee": report.guarantee,
                     "lower": lower, "upper_over_lower": float(report) / lower,
                     "naive_spectral_norm_product": naive,
                     "naive_below_lower_bound": None if naive is None else naive < lower,
                     "upper_seconds": upper_s, "lower_seconds": lower_s})
        print(f"  {name}: upper {float(report):.4g}, lower {lower:.4g}", flush=True)
    return rows


def certify_timing(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    def inference():
        with torch.no_grad():
            return torch.cat([model(x[i : i + BATCH]) for i in range(0, len(y), BATCH)])

    def certify():
        report = lipschitz_bound(model, x[:1])
        with torch.no_grad():
            return torch.cat([margin_radii(model(x[i : i + BATCH]), report, y[i : i + BATCH])
                              for i in range(0, len(y), BATCH)])

    inference()  # warm-up
    plain, total, radii = [], [], None
    for _ in range(9):  # alternate, so both see the same machine load
        plain.append(median_seconds(inference, 1)[0])
        seconds, radii = median_seconds(certify, 1)
        total.append(seconds)
    bound_s, _ = median_seconds(lambda: lipschitz_bound(model, x[:1]), 9)
    plain_s, certify_s = statistics.median(plain), statistics.median(total)
    accuracy = certified_accuracy(radii, [0.0, 0.5, 1.0, 1.58])
    return {"points": len(y), "inference_seconds": plain_s, "certify_seconds": certify_s,
            "ratio": certify_s / plain_s, "bound_seconds": bound_s,
            "ratio_without_bound": (certify_s - bound_s) / plain_s,
            "certified_accuracy": accuracy}


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_train, y_train = data.load("mnist-5k", "train").tensors
    x_test, y_test = data.load("mnist-5k", "test").tensors
    starts = x_test[:8]

    print("1. upper and lower bounds", flush=True)
    cases = {f"{name} (init)": models.build(name) for name in models.RECIPES}
    trained = {f"{name} (2 epochs)": train(models.build(name), x_train, y_train, 2)
               for name in ("lmt-mnist", "sll-s")}
    cases.update(trained)
    cases["resnet-style (init)"] = resnet_style()
    cases["smooth conv (init)"] = smooth_conv()
    brackets = bracket_rows(cases, starts)

    print("2. 20-layer SLL-s", flush=True)
    deep = models.build("sll-s", depth=20).eval()
    deep_s, deep_report = median_seconds(lambda: lipschitz_bound(deep, starts[:1]), 3)
    deep_row = {"sll_conv_layers": 20, "graph_nodes": len(deep_report.layers),
                "seconds": deep_s, "upper": float(deep_report), "target_seconds": 2.0}

    print("3. certify 1,000 test images", flush=True)
    certify_rows = {name: certify_timing(model, x_test, y_test)
                    for name, model in trained.items()}

    print()
    print(format_table(
        [[r["model"], r["upper"], r["lower"], r["upper_over_lower"],
          "n/a" if r["naive_spectral_norm_product"] is None else r["naive_spectral_norm_product"],
          {None: "", True: "yes", False: "no"}[r["naive_below_lower_bound"]],
          r["upper_seconds"], r["lower_seconds"]] for r in brackets],
        ["model", "upper", "lower", "upper/lower", "naive SN product", "naive < lower",
         "upper s", "lower s"]))
    print(f"\n20-layer SLL-s: bound in {deep_s:.3f} s ({deep_row['graph_nodes']} nodes; "
          "target < 2 s)")
    print(format_table(
        [[name, r["inference_seconds"], r["certify_seconds"], r["ratio"], r["bound_seconds"],
          r["ratio_without_bound"], r["certified_accuracy"][0.0], r["certified_accuracy"][1.58]]
         for name, r in certify_rows.items()],
        ["model", "inference s", "certify s", "ratio", "bound s", "ratio w/o bound",
         "clean acc", "cert acc @1.58"]))
    write_json(RESULTS / "bounds.json", {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "brackets": brackets, "sll_s_20_layers": deep_row, "certify_1000": certify_rows,
    })
    print(f"wrote {RESULTS / 'bounds.json'}")


if __name__ == "__main__":
    main()
