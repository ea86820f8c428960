"""Audit of l2 certificates: attack every certified point inside its certified ball.

A certified radius r at x claims that every input within l2 distance r of x keeps the label y.
The audit tries to refute each claim twice:

1. PGD (l2, margin loss) with budget ``budget * r`` (default 0.999 r, just inside the ball);
2. the verified minimal-distance attacks of :func:`minimal_l2_distance` (by default DeepFool,
   then Carlini-Wagner started at DeepFool's point: method ``"deepfool+cw"``), whose
   distance d is an empirical upper bound on the true robust radius.

The attacks run on :func:`~lipcert.attacks.common.attack_copy` of the model (its plain-torch
copy when that returns bit for bit the same logits, which saves the layers' per-call weight
normalization); every adversarial point is verified on the model itself.

A point violates its certificate when PGD finds a misclassified point at distance < r or
d < r (a certified point already misclassified at x has d = 0). Any violation means the
certificate, or the bound it was computed from, is wrong: the report warns loudly and
:meth:`AuditReport.raise_if_violated` raises. ``tightness = d / r`` per certified point
measures how much robustness the certificate leaves unproven (1 is perfectly tight).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipcert.attacks.common import (
    DATA_RANGE,
    Bounds,
    Model,
    attack_copy,
    check_batch,
    check_eot,
    per_sample,
    warned_once,
)
from lipcert.attacks.minimal import minimal_l2_distance, verified_distance
from lipcert.attacks.pgd import pgd
from lipcert.errors import BadInputError, LipcertError
from lipcert.progress import progress_bar


class CertificateViolationError(LipcertError, AssertionError):
    """An attack changed a prediction inside its certified ball: the certificate is wrong."""


class CertificateViolationWarning(UserWarning):
    """Issued by :func:`audit` when a certificate is broken."""


@dataclass(frozen=True, eq=False)
class AuditReport:
    """Outcome of :func:`audit` for N points (tensors on the CPU, distances in float64).

    Attributes:
        radii: certified l2 radii (N,).
        minimal_distances: smallest verified adversarial distance found by any of the attacks,
            PGD included (N,); ``inf`` where none was found, ``nan`` for uncertified points
            (radius 0, not attacked).
        pgd_broken: PGD found a misclassified point inside the certified ball (N,).
        violating: the certificate is broken by either attack (N,).
    """

    radii: Tensor
    minimal_distances: Tensor
    pgd_broken: Tensor
    violating: Tensor

    @property
    def certified(self) -> Tensor:
        """Mask (N,) of the points with a positive certified radius (the attacked ones)."""
        return self.radii > 0

    @property
    def num_certified(self) -> int:
        return int(self.certified.sum())

    @property
    def violations(self) -> int:
        """Number of points whose prediction changed inside their certified ball."""
        return int(self.violating.sum())

    @property
    def violating_indices(self) -> Tensor:
        return self.violating.nonzero().flatten()

    @property
    def tightness(self) -> Tensor:
        """``minimal distance / certified radius`` per certified point (>= 1 when sound)."""
        return self.minimal_distances[self.certified] / self.radii[self.certified]

    def summary(self) -> dict:
        """Counts and tightness statistics as plain numbers (for JSON); the tightness
        statistics are None without certified points and inf where no attack succeeded."""
        ratio = self.tightness
        finite = ratio[torch.isfinite(ratio)]
        return {
            "points": len(self.radii),
            "certified": self.num_certified,
            "violations": self.violations,
            "pgd_violations": int(self.pgd_broken.sum()),
            "violating_indices": self.violating_indices.tolist(),
            "tightness_median": float(ratio.median()) if len(ratio) else None,
            "tightness_min": float(ratio.min()) if len(ratio) else None,
            "no_adversarial_found": int(len(ratio) - len(finite)),
        }

    def raise_if_violated(self) -> None:
        """Raise :class:`CertificateViolationError` if any certificate was broken."""
        if self.violations:
            raise CertificateViolationError(str(self))

    def __str__(self) -> str:
        s = self.summary()
        lines = [
            f"certificate audit: {s['points']} points, {s['certified']} certified (radius > 0)",
            f"  violations: {s['violations']} (PGD inside the ball: {s['pgd_violations']})",
        ]
        if s["certified"]:
            lines.append(
                f"  tightness (minimal adversarial distance / certified radius): median "
                f"{s['tightness_median']:.4g}, min {s['tightness_min']:.4g}"
            )
        if s["no_adversarial_found"]:
            lines.append(f"  no adversarial point found for {s['no_adversarial_found']} points")
        if self.violations:
            shown = s["violating_indices"][:10]
            lines.append(
                f"  BROKEN CERTIFICATES at indices {shown}{' ...' if self.violations > 10 else ''}"
                ": the Lipschitz bound or the radius formula is wrong."
            )
        return "\n".join(lines)


def audit(
    model: Model,
    x: Tensor,
    y: Tensor,
    radii: Tensor,
    *,
    budget: float = 0.999,
    pgd_steps: int = 100,
    restarts: int = 1,
    minimal_method: str = "deepfool+cw",
    minimal_options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    clip: Bounds = DATA_RANGE,
    batch_size: int = 64,
    warn: bool = True,
    eot: int = 1,
    votes: int = 1,
    progress: bool = False,
) -> AuditReport:
    """Attack every point with a positive certified l2 radius inside its certified ball.

    Args:
        model: maps a batch to logits, in eval mode (its mode is not changed).
        x: inputs (N, ...) inside ``clip``; y: labels (N,); radii: certified radii (N,), >= 0.
        budget: PGD radius as a fraction of each certified radius (< 1: the ball's interior).
        pgd_steps, restarts, seed: PGD settings.
        minimal_method: method of :func:`minimal_l2_distance`: ``"deepfool+cw"`` (default),
            ``"best"`` (DeepFool and a 9-round Carlini-Wagner search from ``x``, the default
            before: 4.5 times as long an audit on sll-s, median tightness 0.2% lower),
            ``"deepfool"`` or ``"cw"``.
        minimal_options: keyword arguments of :func:`minimal_l2_distance` (attack budgets
            such as ``cw_steps``, ``cw_binary_search_steps``, ``deepfool_steps``).
        clip: data range; None for no box.
        batch_size: certified points attacked together (the seed is reused for each batch);
            64 keeps the bar moving and ran within 15% of the speed of 256 on a CPU (32 took
            1.8 times as long).
        warn: issue a :class:`CertificateViolationWarning` when a certificate is broken.
        eot, votes: for a randomized model (e.g. certified by
            :func:`lipcert.certify.noise_injection_radii`), noise draws the attacks average
            per step and forward passes each prediction is the majority of.
        progress: show a bar (:func:`lipcert.progress.progress_bar`) over all the points;
            the uncertified ones (nothing to attack) count at once. Within a batch of
            certified points it advances by half the batch when PGD is done (about half of
            the work) and by the rest when the minimal-distance attacks are, so by at most 32
            points at a time with the default ``batch_size``.

    Returns:
        An :class:`AuditReport`.
    """
    check_batch(x, y, clip)
    if not 0 < budget < 1:
        raise BadInputError(f"budget must lie in (0, 1), got {budget}.")
    if batch_size < 1:
        raise BadInputError(f"batch_size must be >= 1, got {batch_size}.")
    if not torch.is_tensor(radii):
        raise BadInputError("radii must be a tensor with one certified radius per sample.")
    check_eot(model, eot, votes)
    radii = per_sample(radii, x, "radii", dtype=torch.float64)
    count = x.shape[0]
    distances = torch.full((count,), math.nan, dtype=torch.float64, device=x.device)
    pgd_broken = torch.zeros(count, dtype=torch.bool, device=x.device)
    certified = radii > 0
    chosen = certified.nonzero().flatten()
    attacker = attack_copy(model, x[chosen[:batch_size]])
    with progress_bar(total=count, desc="audit", unit="point", enabled=progress) as bar:
        bar.update(count - len(chosen))  # uncertified points: nothing to attack
        for start in range(0, len(chosen), batch_size):
            index = chosen[start : start + batch_size]
            xc, yc, rc = x[index], y[index], radii[index]
            eps = (budget * rc).to(x.dtype)
            with warned_once():
                x_adv = pgd(
                    attacker, xc, yc, eps, norm=2, steps=pgd_steps, restarts=restarts,
                    seed=seed, clip=clip, eot=eot,
                )
                pgd_distance = verified_distance(model, xc, yc, x_adv, clip, votes)
                pgd_broken[index] = pgd_distance < rc
                bar.update(len(index) // 2)
                minimal = minimal_l2_distance(
                    model, xc, yc, method=minimal_method, clip=clip, eot=eot, votes=votes,
                    attack_model=attacker, **(minimal_options or {})
                )
            distances[index] = torch.minimum(minimal, pgd_distance)
            bar.update(len(index) - len(index) // 2)
    violating = pgd_broken | (certified & (distances < radii))
    report = AuditReport(
        radii=radii.cpu(),
        minimal_distances=distances.cpu(),
        pgd_broken=pgd_broken.cpu(),
        violating=violating.cpu(),
    )
    if warn and report.violations:
        warnings.warn(str(report), CertificateViolationWarning, stacklevel=2)
    return report
