"""Optimizers and learning-rate schedules by name (all stepped once per batch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from lipcert.errors import BadInputError

OPTIMIZERS = ("adam", "adamw", "sgd", "schedulefree")
SCHEDULES = ("triangular", "cosine", "constant")

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, int], LRScheduler]


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``adam`` uses the SLL settings (betas 0.5, 0.9); ``sgd`` uses momentum 0.9;
    ``schedulefree`` is schedule-free AdamW (Defazio et al. 2024, arXiv 2405.15682; ``pip install
    lipcert[schedulefree]``), meant for the ``constant`` schedule: it averages its iterates
    itself and needs :func:`set_optimizer_mode` around training and evaluation, which
    :func:`lipcert.train.train` does."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "schedulefree":
        try:
            import schedulefree
        except ImportError as err:
            raise BadInputError(
                "optimizer 'schedulefree' needs the schedulefree package: pip install "
                "'lipcert[schedulefree]' (or pip install schedulefree)."
            ) from err
        return schedulefree.AdamWScheduleFree(params, lr=lr, weight_decay=weight_decay)
    raise BadInputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")


def set_optimizer_mode(optimizer: torch.optim.Optimizer, training: bool) -> None:
    """Call ``optimizer.train()`` or ``optimizer.eval()`` for optimizers that keep two sets of
    weights (schedule-free: the model holds the training iterate in train mode, the averaged
    weights to evaluate and save in eval mode); nothing for the others."""
    switch = getattr(optimizer, "train" if training else "eval", None)
    if callable(switch):
        switch()


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at step ``k`` of ``total_steps``.

    ``triangular``: linear from 0 up to 1 at 40% of training, down to 0.05 at 80%, then to
    0 (the SLL schedule, arXiv 2303.03169); ``cosine``: half a cosine from 1 to 0;
    ``constant``: 1.
    """
    if name not in SCHEDULES:
        raise BadInputError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    total = max(1, total_steps)

    def triangular(step: int) -> float:
        t = min(1.0, (step + 1) / total)
        if t <= 0.4:
            return t / 0.4
        if t <= 0.8:
            return 1.0 - 0.95 * (t - 0.4) / 0.4
        return 0.05 * (1.0 - (t - 0.8) / 0.2)

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))

    return {"triangular": triangular, "cosine": cosine, "constant": lambda step: 1.0}[name]


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    """A per-batch :class:`LambdaLR` following :func:`schedule_factor`."""
    return LambdaLR(optimizer, schedule_factor(name, total_steps))
