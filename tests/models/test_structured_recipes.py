"""The ``dcnn-s`` and ``dcnn-lip-s`` recipes: layout and weight counts, bounds against explicit
Jacobians (float64), 1-Lipschitz body of the constrained variant after training steps,
checkpoint round trip, and ``lipcert train`` / ``lipcert certify`` on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jacrev

from lipcert import models
from lipcert.bounds import lipschitz_bound
from lipcert.cli import main
from lipcert.errors import BadInputError
from lipcert.layers import (
    DiagonalCirculantLinear,
    MaxMin,
    NormalizedLinear,
    OrthogonalCirculantLinear,
)
from lipcert.models.structured import LEAKY_SLOPE

count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731


def test_dcnn_s_layout_and_weight_count():
    model = models.build("dcnn-s")
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, DiagonalCirculantLinear, nn.LeakyReLU,
                     DiagonalCirculantLinear, nn.LeakyReLU, DiagonalCirculantLinear]
    assert model[2].negative_slope == LEAKY_SLOPE
    assert all(m.depth == 1 for m in model if isinstance(m, DiagonalCirculantLinear))
    assert count(model) == 2 * 3 * 784 + 784 + 2 * 10  # 3n per DC layer, n + 2*10 for the head
    deeper = models.build("dcnn-s", depth=5, width=1024)
    # an expanding 784 -> 1024 layer pads to 1024: 3 * 1024 weights too
    assert count(deeper) == 5 * 3 * 1024 + 1024 + 2 * 10


def test_dcnn_lip_s_layout_and_even_width():
    model = models.build("dcnn-lip-s", depth=3)
    kinds = [nn.Flatten, DiagonalCirculantLinear, MaxMin, OrthogonalCirculantLinear,
             MaxMin, OrthogonalCirculantLinear, MaxMin, NormalizedLinear]
    assert len(model) == len(kinds)
    assert all(isinstance(m, kind) for m, kind in zip(model, kinds, strict=True))
    assert model[1].normalize
    with pytest.raises(BadInputError, match="even"):
        models.build("dcnn-lip-s", width=63)


def shaken(name: str, **args) -> nn.Sequential:
    """Digits-sized model after SGD steps with a large learning rate, float64, eval mode."""
    torch.manual_seed(1)
    model = models.build(name, image_size=8, **args).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        x = torch.rand(32, 1, 8, 8, dtype=torch.float64)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), torch.arange(32) % 10).backward()
        optimizer.step()
    return model.eval()


def max_jacobian_norm(model: nn.Module, points: torch.Tensor) -> float:
    norms = []
    for x in points:
        jacobian = jacrev(lambda v: model(v[None])[0])(x).reshape(-1, x.numel()).detach()
        norms.append(float(torch.linalg.matrix_norm(jacobian, 2)))
    return max(norms)


@pytest.mark.parametrize("name", ["dcnn-s", "dcnn-lip-s"])
def test_network_bound_is_above_the_jacobian_norm(name):
    model = shaken(name, width=96, depth=3)
    points = torch.randn(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator()
                         .manual_seed(0))
    report = lipschitz_bound(model, points)
    assert report.guarantee == "upper"
    assert float(report.value.detach()) >= max_jacobian_norm(model, points) * (1 - 1e-10)


def test_dcnn_lip_s_is_one_lipschitz_before_the_last_layer():
    model = shaken("dcnn-lip-s", width=96, depth=3)
    body = model[:-1]
    points = torch.randn(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator()
                         .manual_seed(3))
    assert float(lipschitz_bound(body, points).value.detach()) <= 1 + 1e-9
    assert max_jacobian_norm(body, points) <= 1 + 1e-9
    report = lipschitz_bound(model, points)
    assert report.last_linear is not None  # the pairwise certificate reads the head's rows


@pytest.mark.parametrize("name", ["dcnn-s", "dcnn-lip-s"])
def test_checkpoint_round_trip(name, tmp_path):
    model = shaken(name, width=32, depth=2).float()
    path = tmp_path / "model.safetensors"
    models.save(model, path, dataset="digits")
    loaded = models.load(path)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["dcnn-s", "dcnn-lip-s"])
def test_cli_train_then_certify(name, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", name, "--data", "digits", "--epochs", "1", "--width",
                 "64", "--depth", "2", "--eps", "0.1", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    code = main(["certify", str(out), "--eps", "0.05", "0.1", "--no-progress", "--limit",
                 "100"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"({name})" in printed and "(upper)" in printed
