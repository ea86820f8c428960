"""NoiseInjection: fresh noise at every forward in train and eval mode, seeded, with the
law's standard deviation; noise_free(); refused by lipschitz_bound; bad input raises."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import stats
from torch import nn

from lipcert.bounds import lipschitz_bound
from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.layers import NoiseInjection
from lipcert.layers.noise_injection import noise_free, noise_layers


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fresh_noise_at_every_forward_in_both_modes(mode):
    layer = NoiseInjection("gaussian", 0.3, seed=1)
    layer.train(mode == "train")
    x = torch.zeros(4, 5)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    assert not torch.equal(first, x)


def test_same_seed_same_stream_and_manual_seed_restarts_it():
    a, b = NoiseInjection(seed=7), NoiseInjection(seed=7)
    x = torch.zeros(3, 2)
    torch.testing.assert_close(a(x), b(x))
    first = a(x)
    a.manual_seed(7)
    a(x)
    torch.testing.assert_close(a(x), first)
    torch.manual_seed(0)
    c = NoiseInjection()
    torch.manual_seed(0)
    d = NoiseInjection()
    assert c.seed == d.seed  # seed=None draws from the global generator


@pytest.mark.parametrize("law, cdf", [
    ("gaussian", lambda s: stats.norm(scale=s).cdf),
    ("laplace", lambda s: stats.laplace(scale=s / math.sqrt(2)).cdf),
    ("uniform", lambda s: stats.uniform(loc=-s * math.sqrt(3), scale=2 * s * math.sqrt(3)).cdf),
])
def test_noise_has_the_law_and_standard_deviation_sigma(law, cdf):
    sigma = 0.4
    layer = NoiseInjection(law, sigma, seed=3)
    x = torch.full((20_000, 1), 2.0, dtype=torch.float64)
    noise = (layer(x) - x).flatten().numpy()
    assert noise.std() == pytest.approx(sigma, rel=0.03)
    assert stats.kstest(noise, cdf(sigma)).pvalue > 1e-3
    assert layer(x).dtype == torch.float64


def test_noise_free_switches_every_layer_off_and_restores_it():
    model = nn.Sequential(NoiseInjection(seed=0), nn.Linear(3, 3), NoiseInjection(seed=1))
    x = torch.randn(2, 3)
    with noise_free(model):
        torch.testing.assert_close(model(x), model[1](x))
    with model[0].noise_free() as layer:
        torch.testing.assert_close(layer(x), x)
    assert model[0].enabled and model[2].enabled
    assert len(noise_layers(model)) == 2
    with pytest.raises(RuntimeError), model[0].noise_free():
        raise RuntimeError
    assert model[0].enabled


def test_no_state_gradient_flows_and_copies_work():
    layer = NoiseInjection("laplace", 0.2, seed=0)
    assert layer.state_dict() == {} and list(layer.parameters()) == []
    x = torch.randn(2, 3, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    clone = copy.deepcopy(nn.Sequential(layer))
    assert clone(torch.zeros(1, 3)).shape == (1, 3)
    assert "laplace" in repr(layer)


def test_lipschitz_bound_refuses_a_model_with_noise_and_says_where_to_go():
    model = nn.Sequential(nn.Linear(3, 3), NoiseInjection(), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match="noise_injection_radii"):
        lipschitz_bound(model, torch.zeros(1, 3))


@pytest.mark.parametrize("law, sigma", [("gaussian", 0.0), ("gaussian", -1.0),
                                        ("gaussian", math.nan), ("gaussian", math.inf),
                                        ("cauchy", 0.3), ("gaussian", True)])
def test_bad_noise_settings_raise(law, sigma):
    with pytest.raises(BadInputError):
        NoiseInjection(law, sigma)


def test_integer_input_and_bad_seed_raise():
    with pytest.raises(BadInputError):
        NoiseInjection()(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(BadInputError):
        NoiseInjection(seed=1.5)
