"""lipcert.noise: laws, standard deviations and validation, checked by KS tests (scipy)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from lipcert.errors import BadInputError
from lipcert.noise import NOISE_LAWS, check_noise, law_scale, parse_noise_spec, sample_noise

# The law each name must follow, at standard deviation sigma (scipy parametrizations).
SCIPY_LAW = {
    "gaussian": lambda s: stats.norm(scale=s),
    "laplace": lambda s: stats.laplace(scale=s / math.sqrt(2.0)),
    "uniform": lambda s: stats.uniform(loc=-s * math.sqrt(3.0), scale=2 * s * math.sqrt(3.0)),
}


@pytest.mark.parametrize("law", NOISE_LAWS)
@pytest.mark.parametrize("sigma", [0.25, 1.7])
def test_samples_follow_the_law_with_the_stated_standard_deviation(law, sigma):
    g = torch.Generator().manual_seed(1)
    z = sample_noise((200, 250), law, sigma, generator=g, dtype=torch.float64).flatten().numpy()
    assert z.shape == (50_000,)
    # KS against the intended law must pass; against the other laws (same std) must fail.
    assert stats.kstest(z, SCIPY_LAW[law](sigma).cdf).pvalue > 1e-3
    for other in NOISE_LAWS:
        if other != law:
            assert stats.kstest(z, SCIPY_LAW[other](sigma).cdf).pvalue < 1e-6
    # Mean 0 and std sigma within 5 standard errors.
    assert abs(z.mean()) < 5 * sigma / math.sqrt(z.size)
    assert abs(z.std() - sigma) < 0.02 * sigma


def test_sigma_is_the_standard_deviation_not_the_scale():
    assert law_scale("gaussian", 0.5) == 0.5
    assert law_scale("laplace", 0.5) == pytest.approx(0.5 / math.sqrt(2))
    assert law_scale("uniform", 0.5) == pytest.approx(0.5 * math.sqrt(3))
    g = torch.Generator().manual_seed(0)
    z = sample_noise((100_000,), "uniform", 0.5, generator=g)
    assert float(z.abs().max()) <= 0.5 * math.sqrt(3) + 1e-6
    assert float(z.abs().max()) > 0.5 * math.sqrt(3) * 0.999


def test_same_generator_state_gives_same_noise_and_dtype_device():
    for law in NOISE_LAWS:
        a = sample_noise((3, 4), law, 0.3, generator=torch.Generator().manual_seed(7))
        b = sample_noise((3, 4), law, 0.3, generator=torch.Generator().manual_seed(7))
        c = sample_noise((3, 4), law, 0.3, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.dtype == torch.float32 and a.device.type == "cpu"
        assert torch.isfinite(a).all()


def test_laplace_is_finite_at_the_edge_of_the_uniform_draw():
    g = torch.Generator().manual_seed(3)
    z = sample_noise((1_000_000,), "laplace", 1.0, generator=g, dtype=torch.float32)
    assert torch.isfinite(z).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_noise_is_drawn_on_the_generator_device():
    g = torch.Generator("cuda").manual_seed(0)
    for law in NOISE_LAWS:
        assert sample_noise((5,), law, 0.2, generator=g, device="cuda").device.type == "cuda"


def test_generator_on_another_device_is_refused():
    with pytest.raises(BadInputError, match="generator"):
        sample_noise((2,), "gaussian", 0.1, generator=torch.Generator(), device="meta")
    with pytest.raises(BadInputError, match="Generator"):
        sample_noise((2,), "gaussian", 0.1, generator=0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf"), True, "0.5", None])
def test_check_noise_refuses_bad_sigma(sigma):
    with pytest.raises(BadInputError, match="sigma"):
        check_noise("gaussian", sigma)


def test_check_noise_refuses_unknown_law_and_normalizes():
    with pytest.raises(BadInputError, match="gaussian, laplace, uniform"):
        check_noise("cauchy", 0.5)
    assert check_noise("Gaussian", 1) == ("gaussian", 1.0)


def test_parse_noise_spec():
    assert parse_noise_spec("gaussian:0.25") == ("gaussian", 0.25)
    assert parse_noise_spec("laplace: 1") == ("laplace", 1.0)
    for bad in ["gaussian", "gaussian:abc", "cauchy:0.1", "gaussian:0", "a:b:c", "gaussian:-1"]:
        with pytest.raises(BadInputError, match="LAW:SIGMA|sigma"):
            parse_noise_spec(bad)
