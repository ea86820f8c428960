"""Small models and data shared by the trainer tests (digits, 8x8 images)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from lipcert import data


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    return data.load("digits", "train"), data.load("digits", "test")


def tiny_mlp(seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10)
    )
