"""Data augmentation on tensors, on the batch's device: random crops with zero padding and
horizontal flips, with fresh draws per sample and step from a generator seeded by
``(seed, stream, epoch, step, rank)``, so a resumed run augments exactly as an uninterrupted
one. :func:`step_generator` is the seeding shared with :mod:`lipcert.train.noise_augment`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lipcert.errors import BadInputError

__all__ = ["ImageAugment", "make_image_augment", "step_seed", "step_generator", "AUGMENTATIONS"]

AUGMENTATIONS = ("crop", "flip")
"""Names :func:`make_image_augment` takes: ``crop`` (``crop:P`` pads by P pixels, default 2),
``flip`` (horizontal flip with probability 1/2)."""

_STREAM = 0xA06


def step_seed(seed: int, stream: int, epoch: int, step: int, rank: int) -> int:
    """A 63-bit seed for one training step of one random stream (noise, crops, attacks),
    independent across the five keys, so a resumed run draws what an uninterrupted one did."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, int(epoch), int(step),
                                    int(rank)])
    return int(state.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


def step_generator(seed: int, stream: int, epoch: int, step: int, rank: int,
                   device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by :func:`step_seed`."""
    return torch.Generator(device).manual_seed(step_seed(seed, stream, epoch, step, rank))


class ImageAugment:
    """``augment(x, epoch=e, step=s)``: ``x`` (N, C, H, W) randomly cropped (after zero
    padding by ``pad`` pixels, so the size is kept) and/or flipped left-right, per sample."""

    def __init__(self, spec: str, seed: int = 0, rank: int = 0) -> None:
        self.spec = spec
        self.pad, self.flip = _parse(spec)
        self.seed, self.rank = int(seed), int(rank)

    def __call__(self, x: torch.Tensor, *, epoch: int, step: int) -> torch.Tensor:
        if x.dim() != 4:
            raise BadInputError(f"--augment {self.spec} needs image batches (N, C, H, W), got "
                                f"shape {tuple(x.shape)}.")
        generator = step_generator(self.seed, _STREAM, epoch, step, self.rank, x.device)
        n, _, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
            rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
            cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
            batch = torch.arange(n, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
            x = x.permute(0, 3, 1, 2)
        if self.flip:
            flipped = torch.rand(n, generator=generator, device=x.device) < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        return x.contiguous()

    def __repr__(self) -> str:
        return f"ImageAugment({self.spec})"


def _parse(spec: str) -> tuple[int, bool]:
    if not isinstance(spec, str) or not spec.strip():
        raise BadInputError(f"augment must be a string such as 'crop,flip', got {spec!r}.")
    pad, flip = 0, False
    for part in (p.strip() for p in spec.split(",")):
        name, _, value = part.partition(":")
        if name == "crop":
            try:
                pad = int(value) if value else 2
            except ValueError:
                pad = -1
            if pad < 1:
                raise BadInputError(f"augment {part!r}: crop:P takes a padding P >= 1.")
        elif name == "flip" and not value:
            flip = True
        else:
            raise BadInputError(f"unknown augmentation {part!r}; choose from "
                                f"{', '.join(AUGMENTATIONS)} (crop:P sets the padding).")
    return pad, flip


def make_image_augment(spec: str | None, seed: int, rank: int = 0) -> ImageAugment | None:
    """None for no augmentation, else a checked :class:`ImageAugment`."""
    return None if spec is None else ImageAugment(spec, seed=seed, rank=rank)
