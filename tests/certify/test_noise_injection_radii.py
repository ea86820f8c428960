"""noise_injection_radii on small models: the radius scales as sigma / L, stays below the exact
distance to a linear boundary and below Cohen's radius, and bad requests raise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lipcert.certify import noise_injection_radii, renyi
from lipcert.errors import BadInputError, UnsoundRequestError, UnsupportedLayerError
from lipcert.layers import NoiseInjection
from lipcert.linalg import NormBound


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def linear_front(factor: float, dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        layer.weight.copy_(factor * torch.eye(dim))
    return layer


@pytest.mark.parametrize("law", ["gaussian", "laplace", "uniform"])
def test_linear_front_part_radius_depends_on_sigma_over_lipschitz(law):
    """front = c I (norm c), noise c sigma, back = head(h / c): the label law does not depend
    on c (powers of two scale exactly), and neither may the radius, which scales as
    sigma / L (the per-formula scaling is tested in test_noise_injection_renyi.py)."""
    torch.manual_seed(0)
    head = nn.Linear(3, 4)
    x = torch.randn(6, 3)
    results = {}
    for c in (1.0, 4.0):
        model = nn.Sequential(linear_front(c, 3), NoiseInjection(law, 0.5 * c),
                              Scale(1 / c), head).eval()
        results[c] = noise_injection_radii(model, x, n=500, n0=50, seed=3)
    one, four = results[1.0], results[4.0]
    torch.testing.assert_close(one.prediction, four.prediction)
    assert four.lipschitz == pytest.approx(4 * one.lipschitz)
    assert bool((one.radius > 0).any())
    torch.testing.assert_close(four.radius, one.radius, rtol=1e-9, atol=0)  # sigma / L fixed
    expected_norm = 2.0 if law == "gaussian" else 1.0
    assert one.norm == expected_norm
    if law != "gaussian":  # l1 -> l1 through norm equivalence: sqrt(3) * ||c I||_2
        assert one.lipschitz == pytest.approx(math.sqrt(3))


def test_gaussian_at_the_input_is_below_cohen_and_the_distance_to_a_linear_boundary():
    torch.manual_seed(2)
    w = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]])
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.zero_()
    sigma = 0.5
    model = nn.Sequential(nn.Flatten(), NoiseInjection("gaussian", sigma), head).eval()
    x = torch.randn(12, 3)
    result = noise_injection_radii(model, x, n=4000, n0=100, seed=0)
    assert result.lipschitz == 1.0 and "identity" in result.lipschitz_method
    margin = (x @ (w[0] - w[1])).abs()
    distance = margin / (w[0] - w[1]).norm()  # exact l2 distance to the boundary
    certified = result.prediction >= 0
    assert int(certified.sum()) >= 6
    assert bool((result.radius[certified] < distance[certified]).all())
    cohen = renyi.cohen_ceiling(result.p_lower.numpy(), result.p_upper.numpy(), sigma)
    assert bool((result.radius.numpy() <= cohen + 1e-12).all())
    # the predicted class is the side of the boundary (label law of a linear classifier)
    side = (x @ (w[0] - w[1]) < 0).long()
    assert bool((result.prediction[certified] == side[certified]).all())


def test_labels_zero_wrong_points_and_the_result_is_reproducible():
    torch.manual_seed(3)
    model = nn.Sequential(NoiseInjection("laplace", 0.3), nn.Linear(2, 3)).eval()
    x = torch.randn(8, 2)
    first = noise_injection_radii(model, x, n=300, n0=30, seed=5)
    again = noise_injection_radii(model, x, n=300, n0=30, seed=5)
    torch.testing.assert_close(first.radius, again.radius)
    wrong = (first.prediction + 1) % 3
    labelled = noise_injection_radii(model, x, y=wrong, n=300, n0=30, seed=5)
    assert bool((labelled.radius == 0).all()) and not bool(labelled.correct.any())
    assert set(first.routes) == {"renyi", "tv", "pure"}
    best = torch.stack(list(first.routes.values())).max(dim=0).values
    torch.testing.assert_close(first.radius, best)


def test_bad_requests_raise_one_line_errors():
    head = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    with pytest.raises(BadInputError, match="exactly one NoiseInjection"):
        noise_injection_radii(nn.Sequential(NoiseInjection(), NoiseInjection(), head), x, n=10)
    with pytest.raises(BadInputError, match="exactly one NoiseInjection"):
        noise_injection_radii(nn.Sequential(head), x, n=10)
    model = nn.Sequential(nn.Linear(2, 2), NoiseInjection(), head)
    estimate = NormBound(torch.tensor(1.0), "estimate", "power")
    with pytest.raises(UnsoundRequestError):
        noise_injection_radii(model, x, n=10, bound=estimate)
    with pytest.raises(BadInputError):
        noise_injection_radii(model, x * math.nan, n=10)
    for kwargs in ({"n": 0}, {"alpha": 0.0}, {"alpha": 1.5}, {"n0": -1}):
        with pytest.raises(BadInputError):
            noise_injection_radii(model, x, **kwargs)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.noise, self.head = NoiseInjection(), head

        def forward(self, x):
            return self.head(self.noise(x))

    with pytest.raises(UnsupportedLayerError, match="Sequential"):
        noise_injection_radii(Wrapped(), x, n=10)
