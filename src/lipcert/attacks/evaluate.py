"""Robust accuracy under attack, for one or several norms side by side.

A sample counts as robust at radius eps when the model classifies it correctly and the attack
finds no misclassified point within eps. This is an empirical UPPER bound on the true robust
accuracy (a stronger attack can only lower it); certified accuracy is a lower bound.

Showing l2 and l-infinity results on the same model makes visible the trade-off analysed by
Araujo, Meunier, Pinot, Negrevergne 2020, "Advocating for Multiple Defense Strategies against
Adversarial Examples" (arXiv 2012.02632): a defense tuned for one norm is rarely robust in the
other.

Randomized models (:class:`lipcert.layers.NoiseInjection`) are evaluated the way the defense
runs: every forward draws fresh noise (never frozen, never switched off), the attack averages
``eot`` draws per step, and each prediction -- clean and adversarial -- is the majority over
``votes`` fresh draws. (RANDOMIZED.md section 4 describes an evaluation bug of the authors'
code, whose EOT attack ran on the noise-free model; here the noise stays on throughout.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lipcert.attacks.autoattack import autoattack
from lipcert.attacks.common import (
    DATA_RANGE,
    Bounds,
    Model,
    check_eot,
    check_norm,
    predict,
    warned_once,
)
from lipcert.attacks.fgsm import fgsm
from lipcert.attacks.minimal import minimal_l2_distance
from lipcert.attacks.pgd import pgd
from lipcert.errors import BadInputError, check_labels
from lipcert.progress import progress_bar

ATTACKS = ("pgd", "fgsm", "autoattack", "deepfool", "cw")
BALL_ATTACKS = ("pgd", "fgsm", "autoattack")
"""Attacks run once per radius (the others find one minimal l2 perturbation per sample)."""


def robust_accuracy(
    model: Model,
    data: Dataset | tuple[Tensor, Tensor],
    eps_list: Sequence[float] | Mapping[float, Sequence[float]],
    norm: float | Sequence[float] = 2,
    attack: str = "pgd",
    batch_size: int = 256,
    progress: bool = True,
    *,
    steps: int = 50,
    restarts: int = 1,
    loss: str = "margin",
    seed: int | None = 0,
    clip: Bounds = DATA_RANGE,
    device: torch.device | str | None = None,
    eot: int = 1,
    votes: int = 1,
) -> dict:
    """Accuracy of ``model`` on ``data`` under ``attack`` at every radius in ``eps_list``.

    Args:
        model: maps a batch to logits, in eval mode (its mode is not changed).
        data: a Dataset of (input, label) pairs or a tuple of tensors ``(x, y)``.
        eps_list: radii; with several norms, either one list for all or a mapping
            ``{norm: radii}``.
        norm: 2, ``float("inf")``, or a sequence of both for a side-by-side evaluation.
        attack: ``"pgd"``, ``"fgsm"`` (one step; :func:`lipcert.attacks.fgsm`) or
            ``"autoattack"`` (:func:`lipcert.attacks.autoattack`, the standard ensemble;
            needs ``lipcert[autoattack]``), under l2 or l-infinity; ``"deepfool"`` or ``"cw"``
            (l2 only: they find a minimal perturbation once per sample, which is then
            compared with every eps).
        batch_size: samples per attacked batch.
        progress: show a progress bar over the samples (:func:`lipcert.progress.progress_bar`).
        steps, restarts, loss, seed: PGD budget, loss (``"margin"`` or ``"ce"``) and seed
            (``steps`` also bounds DeepFool's and Carlini-Wagner's iterations; FGSM takes
            ``loss``; AutoAttack runs its own fixed budget and takes ``seed`` only).
        clip: data range; None for no box.
        device: where to run; default the device of the model's first parameter (else the
            data's device).
        eot: noise draws the attack averages at every step (expectation over
            transformation); ``eot=1`` on a model with NoiseInjection warns. For
            AutoAttack any ``eot > 1`` selects its ``"rand"`` version (APGD-CE and APGD-DLR,
            each averaging 20 draws per step, the authors' protocol for randomized models).
        votes: every prediction (clean and under attack) is the majority over this many
            forward passes, each with fresh noise for a randomized model.

    Returns:
        ``{"attack", "count", "clean_accuracy", "eot", "votes", "results": [{"norm", "eps",
        "robust_accuracy"}, ...]}`` with accuracies in [0, 1], results in the order of the
        norms, then of the radii.
    """
    if attack not in ATTACKS:
        raise BadInputError(f"attack must be one of {ATTACKS}, got {attack!r}.")
    several = isinstance(norm, Sequence) and not isinstance(norm, str)
    norms = [check_norm(n) for n in (norm if several else [norm])]
    radii = _radii_per_norm(norms, eps_list)
    if attack not in BALL_ATTACKS and norms != [2.0]:
        raise BadInputError(f"attack {attack!r} is an l2 attack; use norm=2 or attack='pgd'.")
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}.")
    check_eot(model, eot, votes)
    loader = _batches(data, batch_size)
    target = _device(model, device)

    total = 0
    correct_count = 0
    robust_count = {(p, e): 0 for p in norms for e in radii[p]}
    with progress_bar(total=_count(data), desc=f"{attack} attack", unit="sample",
                      enabled=progress) as bar:
        for x, y in loader:
            if target is not None:
                x, y = x.to(target), y.to(target)
            # out-of-range labels used to give accuracy 0; predict checks them against the logits
            y = check_labels(y, len(x), torch.iinfo(torch.int64).max)
            correct = predict(model, x, votes, labels=y) == y
            total += len(y)
            correct_count += int(correct.sum())
            if correct.any():
                robust = _robust_counts(model, x[correct], y[correct], attack, radii, steps=steps,
                                        restarts=restarts, seed=seed, loss=loss, clip=clip,
                                        eot=eot, votes=votes)
                for key, count in robust.items():
                    robust_count[key] += count
            bar.update(len(y))
    if total == 0:
        raise BadInputError("data holds no samples.")
    return {
        "attack": attack,
        "count": total,
        "clean_accuracy": correct_count / total,
        "eot": eot,
        "votes": votes,
        "results": [
            {"norm": p, "eps": e, "robust_accuracy": robust_count[(p, e)] / total}
            for p in norms
            for e in radii[p]
        ],
    }


def _robust_counts(model: Model, x: Tensor, y: Tensor, attack: str,
                   radii: dict[float, list[float]], *, steps: int, restarts: int,
                   seed: int | None, loss: str, clip: Bounds, eot: int,
                   votes: int) -> dict[tuple[float, float], int]:
    """``{(norm, eps): samples of the correctly classified batch (x, y) the attack fails on}``."""
    counts = {}
    with warned_once():
        if attack in BALL_ATTACKS:
            for p, eps_list in radii.items():
                for e in eps_list:
                    x_adv = _ball_attack(attack, model, x, y, e, p, steps=steps,
                                         restarts=restarts, seed=seed, loss=loss, clip=clip,
                                         eot=eot)
                    counts[(p, e)] = int((predict(model, x_adv, votes) == y).sum())
            return counts
        distance = minimal_l2_distance(model, x, y, method=attack, clip=clip,
                                       deepfool_steps=steps, cw_steps=steps, eot=eot,
                                       votes=votes)
    return {(2.0, e): int((distance > e).sum()) for e in radii[2.0]}


def _ball_attack(attack: str, model: Model, x: Tensor, y: Tensor, eps: float, norm: float, *,
                 steps: int, restarts: int, seed: int | None, loss: str, clip: Bounds,
                 eot: int) -> Tensor:
    """Adversarial examples of ``attack`` (one of :data:`BALL_ATTACKS`) in the ``eps`` ball."""
    if attack == "pgd":
        return pgd(model, x, y, eps, norm=norm, steps=steps, restarts=restarts, seed=seed,
                   loss=loss, clip=clip, eot=eot)
    if attack == "fgsm":
        return fgsm(model, x, y, eps, norm=norm, loss=loss, clip=clip, eot=eot)
    return autoattack(model, x, y, eps, norm=norm, version="rand" if eot > 1 else "standard",
                      seed=0 if seed is None else seed, clip=clip)


def _count(data: Dataset | tuple[Tensor, Tensor]) -> int | None:
    """Number of samples in ``data`` (None when it has no length)."""
    try:
        return len(data[1]) if isinstance(data, tuple) else len(data)
    except TypeError:
        return None


def _radii_per_norm(
    norms: list[float], eps_list: Sequence[float] | Mapping[float, Sequence[float]]
) -> dict[float, list[float]]:
    if isinstance(eps_list, Mapping):
        radii = {check_norm(p): [float(e) for e in values] for p, values in eps_list.items()}
        missing = [p for p in norms if p not in radii]
        if missing:
            raise BadInputError(f"eps_list has no radii for norm(s) {missing}.")
    else:
        radii = {p: [float(e) for e in eps_list] for p in norms}
    for values in radii.values():
        if not values or any(not math.isfinite(e) or e < 0 for e in values):
            raise BadInputError(f"eps_list needs finite radii >= 0, got {values}.")
    return radii


def _batches(data: Dataset | tuple[Tensor, Tensor], batch_size: int):
    if isinstance(data, tuple):
        if len(data) != 2 or not all(torch.is_tensor(t) for t in data):
            raise BadInputError("data must be a Dataset or a tuple of tensors (x, y).")
        x, y = data
        starts = range(0, len(y), batch_size)
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in starts]
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _device(model: Model, device: torch.device | str | None) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return None if parameter is None else parameter.device
