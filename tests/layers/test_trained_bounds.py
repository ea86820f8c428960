"""#15: every SLL / CPL / AOL / spectral layer of a recipe network reports ``lipschitz_bound``
<= 1 + 1e-6 after aggressive float32 training (large learning rate), at the input shape it
sees in the network."""

from __future__ import annotations

import pytest
import torch

from lipcert import models
from lipcert.layers import (
    AOLConv2d,
    AOLLinear,
    CPLConv2d,
    CPLLinear,
    SLLConv2d,
    SLLLinear,
    SpectralConv2d,
    SpectralLinear,
)
from lipcert.losses import build_loss

FAMILY = (SLLConv2d, SLLLinear, CPLConv2d, CPLLinear, AOLConv2d, AOLLinear, SpectralConv2d,
          SpectralLinear)


def _input_shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Size]:
    shapes: dict[str, torch.Size] = {}

    def record(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            shapes[name] = args[0].shape
        return hook

    hooks = [module.register_forward_pre_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, FAMILY)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize("recipe", ["sll-s", "cpl-s", "aol-s", "spectral-s"])
def test_every_layer_is_one_lipschitz_after_training_with_a_large_lr(recipe):
    model = models.build(recipe, seed=0, width=8, depth=2, dense_width=32, dense_depth=2,
                         image_size=8)
    loss = build_loss("margin-ce", offset=3.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(60):
        value = loss(model(x), y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert max(float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start,
                                                           strict=True)) > 0.5
    model.eval()
    shapes = _input_shapes(model, x[:1])
    assert len(shapes) == 4
    for name, module in model.named_modules():
        if isinstance(module, FAMILY):
            bound = float(module.lipschitz_bound(shapes[name]))
            assert bound <= 1 + 1e-6, f"{recipe} {name}: {bound}"
