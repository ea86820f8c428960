"""Expectation over transformation (EOT) in every attack, on randomized models."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from lipcert.attacks import (
    RandomizedModelWarning,
    carlini_wagner_l2,
    deepfool,
    eot_gradient,
    minimal_l2_distance,
    pgd,
    predict,
    robust_accuracy,
)
from lipcert.layers import NoiseInjection


class Decoy(nn.Module):
    """Margin ``m = w.x - c + (s / f) sin(f w.x + phi)`` with a fresh phase phi ~ U[-pi, pi]
    (from a NoiseInjection) at every forward; class 1 when m > 0.

    The decoy barely moves the margin (at most s / f) but its gradient ``s cos(...) w`` is
    large and random: one draw's gradient points along w with P = 0.55 (s = 6), while the
    mean over 20 draws does with P = 0.85 per step. The expected margin is
    ``w.x - c``, so an attack that follows the expectation crosses the boundary.
    """

    def __init__(self, dim: int = 10, s: float = 6.0, f: float = 1000.0, c: float = 0.0):
        super().__init__()
        self.w = torch.ones(dim) / math.sqrt(dim)
        self.s, self.f, self.c = s, f, c
        self.phase = NoiseInjection("uniform", math.pi / math.sqrt(3), seed=0)  # a = pi

    def forward(self, x):
        projection = x.flatten(1) @ self.w.to(x)
        phi = self.phase(torch.zeros_like(projection))
        m = projection - self.c + self.s / self.f * torch.sin(self.f * projection + phi)
        return torch.stack([-m, m], dim=1)


def decoy_points(model: Decoy, eps: float, count: int = 40, gap: float = 0.5):
    """Points of class 0 at l-inf distance ``gap * eps`` from the boundary along w."""
    torch.manual_seed(0)
    x = torch.randn(count, len(model.w))
    shift = (x @ model.w - model.c) + gap * eps * model.w.abs().sum()
    x = x - shift[:, None] * model.w[None] / model.w.pow(2).sum()
    return x, torch.zeros(count, dtype=torch.long)


def test_eot_gradient_is_the_mean_of_per_draw_gradients():
    model = nn.Sequential(NoiseInjection("gaussian", 0.3, seed=4), nn.Linear(5, 8), nn.Tanh(),
                          nn.Linear(8, 3))
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for loss in ("margin", "ce"):
        model[0].manual_seed(11)
        grad, value, _ = eot_gradient(model, x, y, loss=loss, eot=7)
        model[0].manual_seed(11)
        grads, values = [], []
        for _ in range(7):
            x_var = x.clone().requires_grad_(True)
            logits = model(x_var)
            if loss == "margin":
                other = logits.masked_fill(nn.functional.one_hot(y, 3).bool(), -math.inf)
                per = other.amax(1) - logits.gather(1, y[:, None]).squeeze(1)
            else:
                per = nn.functional.cross_entropy(logits, y, reduction="none")
            (g,) = torch.autograd.grad(per.sum(), x_var)
            grads.append(g)
            values.append(per.detach())
        torch.testing.assert_close(grad, torch.stack(grads).mean(0))
        torch.testing.assert_close(value, torch.stack(values).mean(0))
        # different draws give different gradients: the average is not one draw's
        assert not torch.allclose(grads[0], grads[1])


def test_eot_one_on_a_randomized_model_warns_and_eot_twenty_is_stronger():
    model = Decoy()
    eps = 0.1
    x, y = decoy_points(model, eps)
    common = dict(norm=math.inf, steps=50, clip=None, progress=False, votes=5, seed=0)
    with pytest.warns(RandomizedModelWarning, match="eot"):
        weak = robust_accuracy(model, (x, y), [eps], eot=1, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomizedModelWarning)
        strong = robust_accuracy(model, (x, y), [eps], eot=20, **common)
    assert weak["clean_accuracy"] == strong["clean_accuracy"] == 1.0
    assert strong["eot"] == 20 and strong["votes"] == 5
    weak_acc = weak["results"][0]["robust_accuracy"]
    strong_acc = strong["results"][0]["robust_accuracy"]
    assert strong_acc <= 0.1 and weak_acc >= strong_acc + 0.4  # measured: 0.0 and 0.625


def test_every_attack_takes_eot_and_warns_once_for_eot_one():
    model = nn.Sequential(NoiseInjection("gaussian", 0.05, seed=1), nn.Flatten(),
                          nn.Linear(4, 3))
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    calls = [
        lambda eot: pgd(model, x, y, 0.1, steps=3, eot=eot),
        lambda eot: deepfool(model, x, steps=3, eot=eot),
        lambda eot: carlini_wagner_l2(model, x, y, steps=3, binary_search_steps=1, eot=eot),
        lambda eot: minimal_l2_distance(model, x, y, deepfool_steps=3, cw_steps=3,
                                        cw_binary_search_steps=1, eot=eot, votes=3),
    ]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(1)
        assert sum(issubclass(w.category, RandomizedModelWarning) for w in caught) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", RandomizedModelWarning)
            out = call(4)
        assert out.shape[0] == 3
    deterministic = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomizedModelWarning)
        pgd(deterministic, x, y, 0.1, steps=2)
    with model[0].noise_free(), warnings.catch_warnings():
        warnings.simplefilter("error", RandomizedModelWarning)
        pgd(model, x, y, 0.1, steps=2)  # noise switched off: deterministic, no warning


def test_eot_and_votes_must_be_positive_integers():
    from lipcert.errors import BadInputError

    model = nn.Linear(4, 3)
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(BadInputError, match="eot"):
            pgd(model, x, y, 0.1, eot=bad)
        with pytest.raises(BadInputError, match="votes"):
            robust_accuracy(model, (x, y), [0.1], votes=bad, progress=False)


def test_majority_vote_prediction_draws_fresh_noise():
    model = nn.Sequential(NoiseInjection("gaussian", 1.0, seed=2), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model[1].bias.zero_()
    x = torch.tensor([[0.3, 0.0]]).repeat(400, 1)  # class 0 with probability Phi(0.3) = 0.62
    single = predict(model, x)
    voted = predict(model, x, votes=101)
    assert 0.5 < float((single == 0).double().mean()) < 0.75  # one draw: a coin toss
    assert float((voted == 0).double().mean()) > 0.95  # the majority is the label law's argmax
