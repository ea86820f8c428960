"""Noise augmentation for training base classifiers of randomized smoothing.

Cohen et al. 2019 (arXiv 1902.02918) train the base classifier on ``x + e`` with ``e`` drawn
from the smoothing noise at the same ``sigma``; without it the smoothed classifier abstains on
most inputs. :class:`NoiseAugment` adds fresh noise to every sample at every step, drawn on the
batch's device from a generator seeded by ``(seed, epoch, step, rank)``, so a resumed run draws
exactly the noise of an uninterrupted one.
"""

from __future__ import annotations

import torch

from lipcert.errors import BadInputError
from lipcert.noise import parse_noise_spec, sample_noise
from lipcert.train.augment import step_generator

__all__ = ["NoiseAugment", "make_noise_augment"]

_STREAM = 0x5A0  # separates these draws from any other stream seeded by the same run seed


class NoiseAugment:
    """``augment(x, epoch=e, step=s)`` returns ``x + noise`` (law and standard deviation from a
    ``"LAW:SIGMA"`` spec, e.g. ``"gaussian:0.25"``; see :mod:`lipcert.noise`)."""

    def __init__(self, spec: str, seed: int = 0, rank: int = 0) -> None:
        self.spec = spec
        self.law, self.sigma = parse_noise_spec(spec)
        self.seed, self.rank = int(seed), int(rank)

    def generator(self, device: torch.device, epoch: int, step: int) -> torch.Generator:
        return step_generator(self.seed, _STREAM, epoch, step, self.rank, device)

    def __call__(self, x: torch.Tensor, *, epoch: int, step: int) -> torch.Tensor:
        if not x.dtype.is_floating_point:
            raise BadInputError(f"noise augmentation needs floating-point inputs, got {x.dtype}.")
        noise = sample_noise(x.shape, self.law, self.sigma,
                             generator=self.generator(x.device, epoch, step), device=x.device,
                             dtype=x.dtype)
        return x + noise

    def __repr__(self) -> str:
        return f"NoiseAugment({self.law}:{self.sigma:g})"


def make_noise_augment(noise: str | None, seed: int, rank: int = 0) -> NoiseAugment | None:
    """None for no noise, else a checked :class:`NoiseAugment` (BadInputError on a bad spec)."""
    if noise is None:
        return None
    if not isinstance(noise, str):
        raise BadInputError(f"noise must be a 'LAW:SIGMA' string such as 'gaussian:0.25', got "
                            f"{noise!r}.")
    return NoiseAugment(noise, seed=seed, rank=rank)
