"""Adversarial training: PGD (Madry et al. 2018, arXiv 1706.06083) and the mixed strategies
MAT-Rand / MAT-Max over l-infinity and l2 (Araujo, Meunier, Pinot, Negrevergne 2020, arXiv
2012.02632). With a :class:`lipcert.layers.NoiseInjection` in the model (noise at training AND
inference) it is Randomized Adversarial Training, RAT (arXiv 1903.10219).

Specs (``train(..., adversarial=SPEC)``, CLI ``--adversarial SPEC``):

- ``"pgd-linf:EPS"`` / ``"pgd-l2:EPS"``: train on PGD examples of that norm and radius (inputs
  in [0, 1]);
- ``"mat-rand[:EPS]"``: each batch is attacked under one norm drawn at random (l-infinity or
  l2, probability 1/2 each);
- ``"mat-max[:EPS]"``: each sample keeps whichever of its two attacks has the higher loss.

MAT's l-infinity radius ``EPS`` defaults to the papers' 0.031, its l2 radius is the one whose
ball has the volume of that l-infinity ball in the input dimension (0.832 at d = 3072, as the
papers chose for CIFAR-10; :func:`equal_volume_l2_radius`).

PGD settings are the papers' training defaults: 10 iterations, step ``eps / 5`` (0.0062 for
0.031, 0.1664 for 0.832), a random start, cross-entropy. The attack runs on the model as it
trains (a NoiseInjection draws fresh noise at every attack step, one draw per step as in the
authors' code); the random starts and the MAT-Rand choice come from a generator seeded by
``(seed, epoch, step, rank)``, so a resumed run attacks exactly as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from lipcert.errors import BadInputError
from lipcert.train.augment import step_seed

__all__ = ["Adversary", "make_adversary", "equal_volume_l2_radius", "ADVERSARIAL_FORMS"]

ADVERSARIAL_FORMS = ("pgd-linf:EPS", "pgd-l2:EPS", "mat-rand[:EPS]", "mat-max[:EPS]")
TRAIN_STEPS = 10
STEP_FRACTION = 0.2
MAT_LINF_EPS = 0.031
_STREAM = 0xAD7  # separates these draws from other streams seeded by the same run seed


def equal_volume_l2_radius(eps_inf: float, dim: int) -> float:
    """The l2 radius whose ball in ``dim`` dimensions has the volume of the l-infinity ball of
    radius ``eps_inf``: ``2 eps Gamma(d/2 + 1)^(1/d) / sqrt(pi)`` (computed in log space)."""
    if not (math.isfinite(eps_inf) and eps_inf > 0) or int(dim) < 1:
        raise BadInputError(f"need eps_inf > 0 and dim >= 1, got {eps_inf} and {dim}.")
    return 2 * eps_inf * math.exp(math.lgamma(dim / 2 + 1) / dim) / math.sqrt(math.pi)


def _form() -> str:
    return ", ".join(repr(f) for f in ADVERSARIAL_FORMS)


def _parse_eps(text: str, spec: str) -> float:
    try:
        eps = float(text)
    except ValueError:
        raise BadInputError(
            f"adversarial spec {spec!r}: {text!r} is not a number; use one of {_form()}."
        ) from None
    if not (math.isfinite(eps) and eps > 0):
        raise BadInputError(
            f"adversarial spec {spec!r}: the radius must be a finite number > 0, got {eps}."
        )
    return eps


class Adversary:
    """``adversary(model, x, y, epoch=e, step=s)`` returns the adversarial batch to train on.

    Attributes:
        spec: the spec it was built from; kind: ``"pgd"``, ``"mat-rand"`` or ``"mat-max"``;
        norm / eps: of a PGD adversary (``eps`` is MAT's l-infinity radius).
    """

    def __init__(self, spec: str, seed: int = 0, rank: int = 0) -> None:
        if not isinstance(spec, str):
            raise BadInputError(f"adversarial must be a string, one of {_form()}; got {spec!r}.")
        self.spec = spec
        name, _, value = spec.strip().lower().partition(":")
        if name in ("pgd-linf", "pgd-l2"):
            if not value:
                raise BadInputError(f"adversarial spec {spec!r} needs a radius, e.g. "
                                    f"'{name}:0.1'.")
            self.kind = "pgd"
            self.norm = math.inf if name == "pgd-linf" else 2.0
            self.eps = _parse_eps(value, spec)
        elif name in ("mat-rand", "mat-max"):
            self.kind, self.norm = name, None
            self.eps = _parse_eps(value, spec) if value else MAT_LINF_EPS
        else:
            raise BadInputError(f"unknown adversarial spec {spec!r}; use one of {_form()}.")
        self.seed, self.rank = int(seed), int(rank)

    def radii(self, dim: int) -> list[tuple[float, float]]:
        """The (norm, eps) pairs attacked for inputs of ``dim`` coordinates."""
        if self.kind == "pgd":
            return [(self.norm, self.eps)]
        return [(math.inf, self.eps), (2.0, equal_volume_l2_radius(self.eps, dim))]

    def _seed(self, epoch: int, step: int) -> int:
        return step_seed(self.seed, _STREAM, epoch, step, self.rank)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, epoch: int, step: int
                 ) -> Tensor:
        from lipcert.attacks.common import warned_once
        from lipcert.attacks.pgd import pgd

        seed = self._seed(epoch, step)
        pairs = self.radii(x[0].numel())
        if self.kind == "mat-rand":
            pairs = [pairs[int(np.random.default_rng(seed).integers(2))]]
        points = []
        with warned_once():  # one noise draw per step is the training recipe
            for norm, eps in pairs:
                points.append(pgd(model, x, y, eps, norm=norm, steps=TRAIN_STEPS,
                                  step_size=STEP_FRACTION * eps, seed=seed, loss="ce"))
        if len(points) == 1:
            return points[0].detach()
        with torch.no_grad():
            losses = torch.stack([
                nn.functional.cross_entropy(model(p), y, reduction="none") for p in points])
        pick = losses.argmax(dim=0)
        stacked = torch.stack(points)
        return stacked[pick, torch.arange(len(y), device=x.device)].detach()

    def __repr__(self) -> str:
        return f"Adversary({self.spec!r})"


def make_adversary(spec: str | None, seed: int = 0, rank: int = 0) -> Adversary | None:
    """None for no adversarial training, else a checked :class:`Adversary` (BadInputError
    naming the accepted forms on a bad spec)."""
    return None if spec is None else Adversary(spec, seed=seed, rank=rank)
