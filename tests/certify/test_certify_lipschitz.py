"""Lipschitz-margin certificates: closed forms, attacks inside the radius, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipcert.attacks import pgd
from lipcert.bounds import lipschitz_bound
from lipcert.certify import certified_accuracy, lipschitz_radii, margin_radii
from lipcert.errors import BadInputError, LipcertError, UnsoundRequestError
from lipcert.linalg import NormBound


def test_linear_classifier_pairwise_radius_is_the_distance_to_the_boundary():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    x = torch.randn(32, 2, 3)
    radii = lipschitz_radii(model, x)
    z, w = model(x), model[1].weight
    c = z.argmax(1)
    expected = torch.stack([
        min((z[i, c[i]] - z[i, j]) / (w[c[i]] - w[j]).norm() for j in range(4) if j != c[i])
        for i in range(len(x))])
    torch.testing.assert_close(radii, expected.detach(), rtol=1e-10, atol=0)
    global_radii = lipschitz_radii(model, x, last_layer="global")
    assert bool((global_radii <= radii * (1 + 1e-12)).all())
    assert bool((global_radii < radii).any())


def test_float32_radii_leave_an_absolute_room_for_rounding():
    torch.manual_seed(0)
    logits = torch.randn(64, 5)
    exact = margin_radii(logits.double(), 2.0, last_layer="global")
    guarded = margin_radii(logits.float(), 2.0, last_layer="global")
    assert bool((guarded < exact).all()) and bool((guarded > 0.99 * exact).all())
    # Same margins on top of an offset of 1e6: one float32 ulp there is 0.0625, more than
    # most margins, so the allowance grows with the logits' size and nothing is certified.
    offset = margin_radii((logits + 1e6).float(), 2.0, last_layer="global")
    assert bool((offset == 0).all())
    assert bool((margin_radii((logits + 1e6).double(), 2.0, last_layer="global") > 0).all())


def test_explicit_allowance_enters_the_radius_in_closed_form():
    from lipcert.certify.rounding import RoundingAllowance

    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    allowance = RoundingAllowance(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.0]),
                                  torch.tensor([0.05, 0.0]), True, torch.float64)
    radii = margin_radii(z, 2.0, last_layer="global", allowance=allowance)
    a0 = math.sqrt(2) * torch.tensor([0.15, 0.2])
    a1 = math.sqrt(2) * torch.tensor([0.3, 0.0])
    guard = 1 + 100 * torch.finfo(torch.float64).eps
    expected = (torch.tensor([2.0, 0.5]) - a0) / (math.sqrt(2) * 2.0 * guard + a1)
    torch.testing.assert_close(radii, expected.double(), rtol=1e-12, atol=0)


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        h = self.conv(x)
        h = h + F.relu(self.bn(h))
        return self.head(torch.tanh(self.pool(h)).flatten(1))


@pytest.mark.parametrize("factory", [
    lambda: nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3)),
    SmallConvNet,
], ids=["mlp", "conv"])
@pytest.mark.parametrize("last_layer", ["pairwise", "global"])
def test_certificates_hold_under_pgd(factory, last_layer):
    torch.manual_seed(2)
    model = factory().eval()
    x = torch.rand(96, 4) if isinstance(model, nn.Sequential) else torch.rand(96, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    radii = lipschitz_radii(model, x, y, last_layer=last_layer)
    certified = radii > 0
    assert int(certified.sum()) > 80
    xc, yc, rc = x[certified], y[certified], radii[certified]
    adversarial = pgd(model, xc, yc, rc * (1 - 1e-9), steps=100, restarts=2, seed=0, clip=None)
    assert bool(((adversarial - xc).flatten(1).norm(dim=1) <= rc).all())
    with torch.no_grad():
        assert bool((model(adversarial).argmax(1) == yc).all())
    # The attack is strong enough to matter: far outside the radius it does flip points.
    far = pgd(model, xc, yc, 50 * rc, steps=100, seed=0, clip=None)
    with torch.no_grad():
        assert bool((model(far).argmax(1) != yc).any())


def test_misclassified_points_get_radius_zero_and_labels_are_checked():
    model = nn.Linear(3, 3)
    x = torch.randn(20, 3)
    predicted = model(x).argmax(1)
    wrong = (predicted + 1) % 3
    assert bool((lipschitz_radii(model, x, wrong) == 0).all())
    assert bool((lipschitz_radii(model, x, predicted) > 0).all())
    with pytest.raises(BadInputError):
        lipschitz_radii(model, x, torch.full((20,), 5))
    with pytest.raises(BadInputError):
        lipschitz_radii(model, x, predicted[:3])


def test_report_reuse_number_bounds_and_estimates():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(10, 3)
    report = lipschitz_bound(model, x)
    torch.testing.assert_close(lipschitz_radii(model, x, bound=report), lipschitz_radii(model, x))
    z = model(x)
    by_number = margin_radii(z, float(report))
    torch.testing.assert_close(by_number, margin_radii(z, report, last_layer="global"))
    sound = NormBound(report.value.detach(), "upper", "test")
    torch.testing.assert_close(margin_radii(z, sound), by_number)
    with pytest.raises(UnsoundRequestError):
        margin_radii(z, NormBound(report.value.detach(), "estimate", "power"))
    with pytest.raises(BadInputError):
        margin_radii(z, -1.0)
    with pytest.raises(BadInputError):
        margin_radii(z, report, last_layer="best")


@pytest.mark.parametrize("head", [lambda: nn.Linear(4, 1), lambda: nn.Flatten(0)],
                         ids=["one-logit", "flat"])
def test_outputs_that_are_not_logits(head):
    model = nn.Sequential(nn.Linear(3, 4), head())
    with pytest.raises(LipcertError):
        lipschitz_radii(model, torch.randn(5, 3))


def test_nan_inputs_and_weights():
    model = nn.Linear(3, 3)
    with pytest.raises(BadInputError):
        lipschitz_radii(model, torch.tensor([[float("nan"), 0.0, 0.0]]))
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(BadInputError):
        lipschitz_radii(model, torch.randn(2, 3))


def test_certified_accuracy():
    radii = torch.tensor([0.0, 0.2, 0.5, 1.0, math.inf])
    assert certified_accuracy(radii, [0.0, 0.2, 0.5, 2.0]) == {0.0: 0.8, 0.2: 0.6, 0.5: 0.4,
                                                               2.0: 0.2}
    assert certified_accuracy(radii, 0.1) == {0.1: 0.8}
    with pytest.raises(BadInputError):
        certified_accuracy(radii, [-1.0])
    with pytest.raises(BadInputError):
        certified_accuracy(torch.tensor([]), [0.1])


def test_recipe_with_normalized_last_layer_uses_the_pairwise_form():
    from lipcert import models

    torch.manual_seed(3)
    model = models.build("sll-s", image_size=8, width=4, depth=1, dense_width=16,
                         dense_depth=1).eval()
    x = torch.rand(64, 1, 8, 8)
    report = lipschitz_bound(model, x[:1])
    assert report.last_linear is not None
    torch.testing.assert_close(report.last_linear.weight, model[-1].linear_weight())
    pairwise = lipschitz_radii(model, x, bound=report)
    global_radii = lipschitz_radii(model, x, bound=report, last_layer="global")
    assert bool((pairwise >= global_radii).all()) and bool((pairwise > global_radii).any())
    with torch.no_grad():
        y = model(x).argmax(1)
    keep = pairwise > 0
    adversarial = pgd(model, x[keep], y[keep], pairwise[keep] * (1 - 1e-9), steps=50, seed=0,
                      clip=None)
    with torch.no_grad():
        assert bool((model(adversarial).argmax(1) == y[keep]).all())
