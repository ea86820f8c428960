"""FGSM and AutoAttack against exact adversarial distances of affine classifiers.

For an affine binary classifier the gradient of the loss points along w_other - w_label, so one
FGSM step of length eps is the optimal attack: it succeeds exactly when the distance to the
decision boundary (in the dual norm, see ``linear_distance``) is below eps. AutoAttack is
compared with the same exact distances on a 10-class affine model. Inputs lie in
[0.3, 0.7], so balls of radius < 0.3 stay inside the data box and the no-box distance is the
true one.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from attack_oracles import box_points, linear_distance, linear_model

from lipcert.attacks import autoattack, fgsm, robust_accuracy
from lipcert.errors import BadInputError, MissingDependencyError

INF = math.inf


def image_model(dim: int, classes: int, seed: int) -> tuple[torch.nn.Module, torch.nn.Linear]:
    linear = linear_model(dim, classes, seed)
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval(), linear


def away_from_boundary(distance: torch.Tensor, eps: float, tolerance: float = 0.02):
    """Points whose exact distance is not within ``tolerance`` (relative) of eps."""
    return (distance - eps).abs() > tolerance * eps


@pytest.mark.parametrize("norm, dual", [(INF, 1), (2.0, 2)])
def test_fgsm_is_the_optimal_attack_on_a_binary_affine_model(norm, dual):
    model = linear_model(12, 2, seed=3)
    x = box_points(200, 12, seed=4)
    y = model(x).argmax(1)
    distance = linear_distance(model, x, y, dual=dual)
    eps = float(distance.median())
    x_adv = fgsm(model, x, y, eps, norm=norm)
    broken = model(x_adv).argmax(1) != y
    keep = away_from_boundary(distance, eps)
    assert keep.sum() > 150
    assert torch.equal(broken[keep], (distance < eps)[keep])
    delta = (x_adv - x).flatten(1)
    lengths = delta.abs().amax(1) if norm == INF else delta.norm(dim=1)
    assert bool((lengths <= eps * (1 + 1e-12)).all())
    # the step raises every affine loss, so each sample gets the whole step
    assert torch.allclose(lengths, torch.full_like(lengths, eps), rtol=1e-9)


def test_fgsm_through_robust_accuracy_matches_the_exact_count():
    model = linear_model(12, 2, seed=5)
    x = box_points(120, 12, seed=6)
    y = model(x).argmax(1)
    distance = linear_distance(model, x, y, dual=1)
    eps = [0.25 * float(distance.median()), float(distance.median())]
    result = robust_accuracy(model, (x, y), eps, norm=INF, attack="fgsm", progress=False)
    for row, e in zip(result["results"], eps, strict=True):
        exact = float((distance > e).double().mean())
        assert abs(row["robust_accuracy"] - exact) <= 2 / len(y)  # ties at the boundary


def test_fgsm_refuses_what_pgd_refuses():
    model = linear_model(4, 2, seed=0)
    x = box_points(3, 4, seed=1)
    with pytest.raises(BadInputError):
        fgsm(model, x, torch.tensor([0, 1, 2]), 0.1)  # label 2 of a 2-class model
    with pytest.raises(BadInputError):
        fgsm(model, x, torch.tensor([0, 1, 0]), 0.1, norm=1)


def test_autoattack_without_torchattacks_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    model, _ = image_model(16, 10, seed=0)
    x = box_points(2, 16, seed=1).view(2, 1, 4, 4)
    with pytest.raises(MissingDependencyError, match=r"lipcert\[autoattack\]"):
        autoattack(model, x, torch.tensor([0, 1]), 0.1)


def test_autoattack_refuses_what_it_cannot_attack():
    pytest.importorskip("torchattacks")
    model, _ = image_model(16, 10, seed=0)
    x = box_points(2, 16, seed=1).view(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        autoattack(model, x, y, 0.1, clip=None)
    with pytest.raises(BadInputError, match="version"):
        autoattack(model, x, y, 0.1, version="plus")
    with pytest.raises(BadInputError, match="one finite radius"):
        autoattack(model, x, y, torch.tensor([0.1, 0.2]))
    with pytest.raises(BadInputError, match="N, C, H, W"):
        autoattack(torch.nn.Sequential(torch.nn.Flatten(), model[1]), x.flatten(1), y, 0.1)
    three, _ = image_model(16, 3, seed=0)
    with pytest.raises(BadInputError, match="at least 4 classes"):
        autoattack(three, x, y, 0.1)


@pytest.mark.parametrize("norm, dual, side", [(INF, 1, 4), (2.0, 2, 8)])
def test_autoattack_breaks_exactly_the_breakable_points(norm, dual, side):
    pytest.importorskip("torchattacks")
    dim = side * side
    model, linear = image_model(dim, 10, seed=1)
    x = box_points(12, dim, seed=2)
    y = linear(x).argmax(1)
    distance = linear_distance(linear, x, y, dual=dual)
    eps = float(distance.median())
    images = x.view(-1, 1, side, side)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    state = torch.random.get_rng_state()
    x_adv = autoattack(model, images, y, eps, norm=norm, seed=0)
    # lipcert's conventions: global RNG, mode, requires_grad and .grad untouched
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not model.training
    assert all(p.requires_grad and not p.grad.any() for p in model.parameters())
    assert x_adv.dtype == images.dtype and x_adv.shape == images.shape
    assert not x_adv.requires_grad
    delta = (x_adv - images).flatten(1)
    lengths = delta.abs().amax(1) if norm == INF else delta.norm(dim=1)
    assert bool((lengths <= eps * (1 + 1e-12)).all())
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    broken = model(x_adv).argmax(1) != y
    keep = away_from_boundary(distance, eps, 0.05)
    assert keep.sum() >= 8
    assert torch.equal(broken[keep], (distance < eps)[keep])
