"""Small models with closed-form adversarial distances, shared by the attack tests."""

from __future__ import annotations

import functools
import math

import torch


def linear_model(dim: int, classes: int, seed: int) -> torch.nn.Linear:
    """A float64 affine classifier z = W x + b with random weights."""
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(dim, classes).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, dim, generator=generator, dtype=torch.float64))
        model.bias.copy_(torch.randn(classes, generator=generator, dtype=torch.float64))
    return model.eval()


def linear_distance(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, dual: float = 2):
    """Exact distance from x to the region where class y no longer wins (no box):
    min_j (z_y - z_j) / ||w_y - w_j||_dual (dual = 2 for l2, dual = 1 for l-infinity)."""
    with torch.no_grad():
        z = model(x)
        weight = model.weight
        gaps = z.gather(1, y[:, None]) - z
        lengths = (weight[y][:, None, :] - weight[None, :, :]).norm(p=dual, dim=2)
        ratios = gaps / lengths
        ratios[torch.arange(len(y)), y] = math.inf
        return ratios.min(dim=1).values


def points(count: int, dim: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(count, dim, generator=generator, dtype=torch.float64)


def box_points(count: int, dim: int, seed: int) -> torch.Tensor:
    """Points inside [0.3, 0.7]^dim, inside the data range [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(count, dim, generator=generator, dtype=torch.float64)


def mlp(dim: int, hidden: int, classes: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes)
    ).double().eval()


def mlp_radii(model: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sound l2 radii of a Linear-ReLU-Linear network from exact singular values:
    min_j (z_y - z_j) / (||W1||_2 ||w2_y - w2_j||), clamped at 0 (independent of lipcert)."""
    first, last = model[0].weight, model[2].weight
    with torch.no_grad():
        lip = torch.linalg.svdvals(first)[0]
        z = model(x)
        gaps = z.gather(1, y[:, None]) - z
        lengths = (last[y][:, None, :] - last[None, :, :]).norm(dim=2) * lip
        ratios = gaps / lengths
        ratios[torch.arange(len(y)), y] = math.inf
        return ratios.min(dim=1).values.clamp_min(0)


@functools.lru_cache(maxsize=1)
def trained_sll(steps: int = 40, seed: int = 0) -> torch.nn.Module:
    """A tiny lipcert SLL network (sll-s recipe) trained briefly on the embedded digits
    (cached: treat it as read-only)."""
    from lipcert import data, models

    torch.manual_seed(seed)
    model = models.build(
        "sll-s", image_size=8, width=4, depth=1, dense_width=32, dense_depth=1
    )
    x, y = data.load("digits", "train").tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(y), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
