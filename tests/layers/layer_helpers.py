"""Helpers shared by the layer tests: seeded generators and adversarial training steps."""

from __future__ import annotations

import torch


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(seed)


def train_to_expand(layer: torch.nn.Module, shape: tuple[int, ...], seed: int,
                    steps: int = 25, lr: float = 0.5) -> None:
    """SGD steps that push ``layer`` to expand distances between nearby float64 inputs of
    ``shape``: the hardest training for a layer whose guarantee must survive training."""
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    generator = seeded(seed)
    for _ in range(steps):
        a = torch.randn(8, *shape, dtype=torch.float64, generator=generator)
        b = a + 0.1 * torch.randn(8, *shape, dtype=torch.float64, generator=generator)
        loss = -(layer(a) - layer(b)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
