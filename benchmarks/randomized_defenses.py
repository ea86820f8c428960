"""Randomized defenses side by side: plain training, adversarial training (l-inf, l2, MAT-Rand),
noise injection (Gaussian, uniform) and RAT-l-inf (Gaussian, uniform), on the same small CNN.

Papers: Pinot et al. 2019 (arXiv 1902.01148, noise injection and its Renyi certificate), Araujo
et al. 2019/2020 (arXiv 1903.10219, RAT; arXiv 2012.02632, MAT and the l2 / l-inf geometry).

Budget (CPU-modest, one thread): the embedded mnist-5k (4,000 training images), recipe cnn-s at
width 8 / dense width 64, the same seed, Adam lr 0.003, batch 128 and EPOCHS epochs for every
defense; training attacks are the papers' (10 PGD steps of eps/5, random start). Evaluation on
the first N_TEST test images:

- PGD l-inf at eps 0.1 and PGD l2 at the radius of equal ball volume in d = 784 (1.362), as
  2012.02632 pairs them for its data; STEPS steps of 2.5 eps / STEPS, margin loss, one random
  start, with EOT over K noise draws per step for the randomized models (K = 1 for the
  deterministic ones, where every draw is the same), every prediction the majority of VOTES
  fresh draws; the noise stays on throughout (the authors' evaluation ran its EOT attack on
  the noise-free model: the "noise off" row repeats that mistake for comparison).
- the noise-injection certificate (lipcert.certify.noise_injection_radii, n = N_CERT draws,
  alpha = 0.001) at l2 radii: Gaussian models certify l2 directly; uniform models certify l1,
  turned into l2 by dividing by sqrt(784) (an l2 ball of radius r lies in the l1 ball of radius
  r sqrt(d)).
- geometry: mean l2 and l-inf norms of each attack's perturbations against each defense, and
  the fraction of the l-inf ball covered by the l2 ball of equal volume (Chernoff bound, log10).

Run: ``python benchmarks/randomized_defenses.py`` (about 15 minutes on a loaded 2-core
machine; ``--quick`` for a smoke run that writes nothing). Writes
benchmarks/results/randomized_defenses.json.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import optimize, special

from lipcert import data
from lipcert.attacks import pgd, predict
from lipcert.attacks.common import warned_once
from lipcert.certify import noise_injection_radii
from lipcert.layers.noise_injection import noise_free
from lipcert.losses import build_loss
from lipcert.models import build
from lipcert.report import format_table, write_json
from lipcert.train import train
from lipcert.train.adversarial import equal_volume_l2_radius

EPS_INF = 0.1
DIM = 784
EPS_L2 = equal_volume_l2_radius(EPS_INF, DIM)
GAUSS = "gaussian:0.25"  # the RAT config's Gaussian std on [0, 1] pixels
UNIFORM = f"uniform:{0.2 / math.sqrt(3):.6f}"  # uniform on [-0.2, 0.2], std 0.115
DEFENSES = [  # name, adversarial spec, noise layer
    ("plain", None, None),
    ("AT-linf", f"pgd-linf:{EPS_INF}", None),
    ("AT-l2", f"pgd-l2:{EPS_L2:.4f}", None),
    ("MAT-rand", f"mat-rand:{EPS_INF}", None),
    ("NI Gaussian", None, GAUSS),
    ("NI uniform", None, UNIFORM),
    ("RAT-linf Gaussian", f"pgd-linf:{EPS_INF}", GAUSS),
    ("RAT-linf uniform", f"pgd-linf:{EPS_INF}", UNIFORM),
]
CERT_RADII = (0.25, 0.5, 1.0)


def log10_l2_fraction(dim: int) -> tuple[float, float]:
    """log10 of (a) the Chernoff upper bound on the fraction of the cube [-1, 1]^d inside the
    l2 ball of equal volume, ``min_t exp(t r^2) E[exp(-t U^2)]^d`` (exact exponent), and (b) the
    theorem's leading term ``exp(-(2/(pi e) - 2/3)^2 d)`` of 2012.02632."""
    r2 = equal_volume_l2_radius(1.0, dim) ** 2

    def log_bound(t: float) -> float:
        # E exp(-t U^2), U ~ U[-1, 1] = sqrt(pi / t) erf(sqrt t) / 2
        return t * r2 + dim * math.log(math.sqrt(math.pi / t) * special.erf(math.sqrt(t)) / 2)

    best = optimize.minimize_scalar(log_bound, bounds=(1e-6, 1e3), method="bounded")
    theorem = -((2 / (math.pi * math.e) - 2 / 3) ** 2) * dim
    return best.fun / math.log(10), theorem / math.log(10)


def evaluate(model, x, y, *, randomized: bool, steps: int, eot: int, votes: int, seed: int,
             noise_off: bool = False) -> dict:
    """Clean and PGD robust accuracy (l-inf and l2) with perturbation norms; ``noise_off``
    attacks AND evaluates the noise-free model (the authors' buggy protocol)."""
    k = eot if randomized else 1
    m = votes if randomized else 1
    context = noise_free(model) if noise_off else warnings.catch_warnings()
    out = {}
    with context:
        correct = predict(model, x, m) == y
        out["clean"] = float(correct.double().mean())
        for norm, eps, name in ((math.inf, EPS_INF, "linf"), (2.0, EPS_L2, "l2")):
            with warned_once():
                x_adv = pgd(model, x, y, eps, norm=norm, steps=steps, seed=seed, eot=k)
            robust = correct & (predict(model, x_adv, m) == y)
            delta = (x_adv - x).flatten(1)
            out[f"pgd_{name}"] = float(robust.double().mean())
            out[f"{name}_attack_l2"] = float(delta.norm(dim=1).mean())
            out[f"{name}_attack_linf"] = float(delta.abs().amax(dim=1).mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; writes nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quick = args.quick
    epochs, n_test, steps, eot, votes, n_cert = (1, 20, 3, 4, 3, 50) if quick else \
        (3, 200, 10, 20, 9, 500)
    train_data = data.load("mnist-5k", "train")
    test_data = data.load("mnist-5k", "test")
    if quick:
        train_data = torch.utils.data.Subset(train_data, range(512))
    x = torch.stack([test_data[i][0] for i in range(n_test)])
    y = torch.tensor([int(test_data[i][1]) for i in range(n_test)])

    rows, results = [], {}
    started = time.perf_counter()
    for name, adversarial, noise in DEFENSES:
        t0 = time.perf_counter()
        sizes = {"width": 8, "dense_width": 64}
        model = build("cnn-s", seed=0, **sizes, **({"noise": noise} if noise else {}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            train(model, train_data, test_data, build_loss("ce"), epochs, lr=0.003,
                  batch_size=128, seed=0, certify=False, progress=False,
                  adversarial=adversarial)
        train_seconds = time.perf_counter() - t0
        model.eval()
        randomized = noise is not None
        entry = evaluate(model, x, y, randomized=randomized, steps=steps, eot=eot, votes=votes,
                         seed=1)
        entry.update(adversarial=adversarial, noise_layer=noise, train_seconds=train_seconds)
        if randomized:
            cert = noise_injection_radii(model, x, y, n=n_cert, alpha=0.001, seed=2)
            scale = 1.0 if cert.norm == 2.0 else 1 / math.sqrt(DIM)
            l2_radii = cert.radius * scale
            entry["certified"] = {f"{r:g}": float((l2_radii > r).double().mean())
                                  for r in CERT_RADII}
            entry["certified_norm"] = "l2" if cert.norm == 2.0 else "l1 / sqrt(d)"
            entry["median_radius"] = float(cert.radius[cert.radius > 0].median()) \
                if bool((cert.radius > 0).any()) else 0.0
            entry["lipschitz_front"] = cert.lipschitz
            entry["buggy_noise_off"] = evaluate(model, x, y, randomized=False, steps=steps,
                                                eot=1, votes=1, seed=1, noise_off=True)
        entry["seconds"] = time.perf_counter() - t0
        results[name] = entry
        cert_cells = [entry["certified"][f"{r:g}"] if randomized else "-" for r in CERT_RADII]
        rows.append([name, entry["clean"], entry["pgd_linf"], entry["pgd_l2"], *cert_cells,
                     entry["linf_attack_l2"], entry["l2_attack_linf"], entry["seconds"]])
        print(f"{name}: done in {entry['seconds']:.0f}s", file=sys.stderr, flush=True)
    headers = ["defense", "clean", f"PGD-linf {EPS_INF:g}", f"PGD-l2 {EPS_L2:.3f}",
               *[f"cert l2 {r:g}" for r in CERT_RADII], "linf-attack mean l2",
               "l2-attack mean linf", "seconds"]
    print(format_table(rows, headers))
    bug_rows = [[name, results[name]["pgd_linf"], results[name]["buggy_noise_off"]["pgd_linf"],
                 results[name]["pgd_l2"], results[name]["buggy_noise_off"]["pgd_l2"]]
                for name, _, noise in DEFENSES if noise]
    print("\nEvaluation with the noise on (EOT) vs the authors' noise-off protocol:")
    print(format_table(bug_rows, ["defense", "PGD-linf (noise on)", "PGD-linf (noise off)",
                                  "PGD-l2 (noise on)", "PGD-l2 (noise off)"]))

    chernoff, theorem = log10_l2_fraction(DIM)
    print(f"\nl2 ball of equal volume covers at most 10^{chernoff:.1f} of the l-inf ball in "
          f"d = {DIM} (Chernoff); the theorem's leading term is 10^{theorem:.1f}.")
    rng = np.random.default_rng(0)
    check_rows = []
    for d in (10, 40):  # Monte Carlo where the fraction is measurable
        u = rng.uniform(-1, 1, (400_000, d))
        frac = float(np.mean((u**2).sum(1) <= equal_volume_l2_radius(1.0, d) ** 2))
        check_rows.append([d, math.log10(frac), *log10_l2_fraction(d)])
    print(format_table(check_rows, ["d", "log10 Monte Carlo", "log10 Chernoff bound",
                                    "log10 theorem term"]))

    r = results
    checks = {
        "AT-linf beats NI Gaussian under PGD-linf": r["AT-linf"]["pgd_linf"]
        > r["NI Gaussian"]["pgd_linf"],
        "AT-linf beats NI uniform under PGD-linf": r["AT-linf"]["pgd_linf"]
        > r["NI uniform"]["pgd_linf"],
        "NI Gaussian >= AT-linf under PGD-l2": r["NI Gaussian"]["pgd_l2"]
        >= r["AT-linf"]["pgd_l2"],
        "NI uniform >= AT-linf under PGD-l2": r["NI uniform"]["pgd_l2"] >= r["AT-linf"]["pgd_l2"],
    }
    for law in ("Gaussian", "uniform"):
        rat, ni, at = r[f"RAT-linf {law}"], r[f"NI {law}"], r["AT-linf"]
        for attack in ("pgd_linf", "pgd_l2"):
            low, high = sorted((ni[attack], at[attack]))
            checks[f"RAT-linf {law} between NI and AT-linf on {attack}"] = \
                low <= rat[attack] <= high
    print("\nOrderings of the papers:")
    for claim, holds in checks.items():
        print(f"  {'holds ' if holds else 'FAILS '} {claim}")

    payload = {
        "benchmark": "randomized_defenses",
        "settings": {"data": "mnist-5k", "train_images": len(train_data), "test_points": n_test,
                     "epochs": epochs, "model": "cnn-s width 8, dense 64", "eps_linf": EPS_INF,
                     "eps_l2": EPS_L2, "pgd_steps": steps, "eot": eot, "votes": votes,
                     "cert_draws": n_cert, "cert_alpha": 0.001, "threads": 1},
        "results": results,
        "volume_fraction_log10": {"chernoff": chernoff, "theorem_leading_term": theorem,
                                  "monte_carlo_check": check_rows},
        "orderings": checks,
        "seconds": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
    }
    if not quick:
        out = Path(__file__).parent / "results" / "randomized_defenses.json"
        write_json(out, payload)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
