"""Structured layers against explicit dense matrices built with scipy from the same parameters:
forward results, declared norm guarantees (exact / upper vs the SVD), gradcheck, orthogonality
of the orthogonal circulant's Jacobian, parameter counts, export, network bounds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_helpers import seeded, train_to_expand
from torch import nn
from torch.func import jacrev

import lipcert.layers.structured as structured
from lipcert.bounds import lipschitz_bound
from lipcert.errors import BadInputError, UnsoundRequestError
from lipcert.layers import (
    CirculantLinear,
    DiagonalCirculantLinear,
    OrthogonalCirculantLinear,
    ToeplitzLinear,
    to_vanilla,
)
from lipcert.layers.structured import fft_size

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
SHAPES = [(6, 6), (4, 9), (9, 4), (1, 5), (5, 1), (7, 7)]  # square, expanding, shrinking


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def dc_oracle(layer: DiagonalCirculantLinear) -> np.ndarray:
    """``P_out D_k C_k ... D_1 C_1 P_in`` from scipy.linalg.circulant, float64."""
    n, m, size = layer.in_features, layer.out_features, layer.size
    matrix = np.eye(size)[:, :n]  # P_in: zero-pad the input
    for index, (kernel, diagonal) in enumerate(layer.factors()):
        matrix = scipy.linalg.circulant(np64(kernel)) @ matrix
        if index == layer.depth - 1:
            matrix = matrix[:m]
        matrix = np.diag(np64(diagonal)) @ matrix
    return matrix


def toeplitz_oracle(layer: ToeplitzLinear) -> np.ndarray:
    m = layer.out_features
    kernel = np64(layer.kernel)
    col, row = kernel[:m], np.concatenate((kernel[:1], kernel[m:][::-1]))
    matrix = scipy.linalg.toeplitz(col, row)
    if layer.normalize:
        matrix = matrix / np.abs(np.fft.fft(np.concatenate((col, row[1:][::-1])))).max()
    return matrix


def circulant_oracle(layer) -> np.ndarray:
    if isinstance(layer, OrthogonalCirculantLinear):
        spectrum = np.fft.fft(np64(layer.kernel))
        return scipy.linalg.circulant(np.fft.ifft(spectrum / np.abs(spectrum)).real)
    kernel = np64(layer.kernel)
    if layer.normalize:
        kernel = kernel / np.abs(np.fft.fft(kernel)).max()
    return scipy.linalg.circulant(kernel)


def oracle(layer) -> np.ndarray:
    if isinstance(layer, DiagonalCirculantLinear):
        return dc_oracle(layer)
    if isinstance(layer, ToeplitzLinear):
        return toeplitz_oracle(layer)
    return circulant_oracle(layer)


def perturb(layer: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Random changes to every parameter (diagonals no longer +-1), as after training."""
    generator = seeded(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return layer


def factories(m_in: int, m_out: int):
    square = m_in == m_out
    cases = {
        "dc1": lambda g: DiagonalCirculantLinear(m_in, m_out, generator=g),
        "dc3": lambda g: DiagonalCirculantLinear(m_in, m_out, depth=3, generator=g),
        "dc2-normalized": lambda g: DiagonalCirculantLinear(m_in, m_out, depth=2,
                                                           normalize=True, generator=g),
        "toeplitz": lambda g: ToeplitzLinear(m_in, m_out, generator=g),
        "toeplitz-normalized": lambda g: ToeplitzLinear(m_in, m_out, normalize=True,
                                                        generator=g),
    }
    if square:
        cases.update({
            "circulant": lambda g: CirculantLinear(m_in, generator=g),
            "circulant-normalized": lambda g: CirculantLinear(m_in, normalize=True, generator=g),
            "circulant-no-bias": lambda g: CirculantLinear(m_in, bias=False, generator=g),
            "orthogonal": lambda g: OrthogonalCirculantLinear(m_in, generator=g),
        })
    return cases


ALL_CASES = [(shape, name) for shape in SHAPES for name in factories(*shape)]


def build(shape, name, seed=0, dtype=torch.float64):
    return perturb(factories(*shape)[name](seeded(seed)).to(dtype), seed + 1)


@pytest.mark.parametrize(("shape", "name"), ALL_CASES)
def test_forward_equals_the_explicit_scipy_matrix(shape, name):
    layer = build(shape, name)
    matrix = torch.from_numpy(oracle(layer))
    bias = 0 if layer.bias is None else layer.bias.detach()
    x = torch.randn(5, shape[0], dtype=torch.float64, generator=seeded(3))
    torch.testing.assert_close(layer(x).detach(), x @ matrix.T + bias, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.explicit_matrix().detach(), matrix, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.linear_weight().detach(), matrix, atol=1e-12, rtol=0)
    single = build(shape, name, dtype=torch.float32)
    matrix32 = torch.from_numpy(oracle(single))
    bias32 = 0 if single.bias is None else single.bias.detach().double()
    torch.testing.assert_close(single(x.float()).detach().double(), x @ matrix32.T + bias32,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize(("shape", "name"), ALL_CASES)
def test_declared_norm_guarantee_against_the_svd(shape, name, guarantee_check):
    layer = build(shape, name)
    truth = float(np.linalg.norm(oracle(layer), 2))
    bound = layer.lipschitz_bound((2, shape[0]))
    guarantee_check(bound, truth)
    expected = {"circulant": "exact", "orthogonal": "exact", "toeplitz": "upper"}
    if name.split("-")[0] in expected:
        assert bound.guarantee == expected[name.split("-")[0]]
    if name in ("orthogonal", "circulant-normalized"):
        assert abs(float(bound) - 1) <= 1e-12 and abs(truth - 1) <= 1e-12
    if name.endswith("normalized"):
        assert float(bound) <= 1 + 1e-12
    if isinstance(layer, DiagonalCirculantLinear):
        exact = layer.lipschitz_bound((2, shape[0]), method="exact")
        assert exact.guarantee == "exact" and abs(float(exact) - truth) <= 1e-10 * truth
    if isinstance(layer, ToeplitzLinear):
        estimate = layer.norm_estimate()
        assert estimate.guarantee == "estimate" and float(estimate) <= truth * (1 + 1e-9)
        assert float(layer.lipschitz_bound((2, shape[0]), method="exact")) == pytest.approx(
            truth, rel=1e-10)


@pytest.fixture
def guarantee_check():
    def check(bound, truth, rtol=1e-9):
        value, slack = float(bound), rtol * truth + 1e-12
        if bound.guarantee == "exact":
            assert abs(value - truth) <= slack, (bound, truth)
        else:
            assert bound.guarantee == "upper" and value >= truth - slack, (bound, truth)
    return check


@pytest.mark.parametrize("size", [5, 8])
def test_dc_bound_is_exact_for_one_square_factor_with_constant_modulus(size):
    layer = DiagonalCirculantLinear(size, size, generator=seeded(size)).double()
    assert set(np.abs(np64(layer.diagonal0))) == {1.0}  # the paper's +-1 initialization
    bound = layer.lipschitz_bound((1, size))
    assert bound.guarantee == "exact"
    assert float(bound) == pytest.approx(float(np.linalg.norm(dc_oracle(layer), 2)), rel=1e-12)
    with torch.no_grad():
        layer.diagonal0.mul_(-2.5)  # still constant modulus
    assert layer.lipschitz_bound((1, size)).guarantee == "exact"
    with torch.no_grad():
        layer.diagonal0[0] = 0.1
    assert layer.lipschitz_bound((1, size)).guarantee == "upper"
    for shape, depth in (((size, size + 1), 1), ((size, size), 2)):
        other = DiagonalCirculantLinear(*shape, depth=depth, generator=seeded(1)).double()
        assert other.lipschitz_bound((1, shape[0])).guarantee == "upper"


@st.composite
def structured_cases(draw):
    kind = draw(st.sampled_from(("dc", "toeplitz", "circulant")))
    m_in, m_out = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.integers(-3, 3))
    normalize = draw(st.booleans())
    generator = seeded(seed)
    if kind == "dc":
        layer = DiagonalCirculantLinear(m_in, m_out, depth=draw(st.integers(1, 4)),
                                        normalize=normalize, generator=generator)
    elif kind == "toeplitz":
        layer = ToeplitzLinear(m_in, m_out, normalize=normalize, generator=generator)
    else:
        layer = CirculantLinear(m_in, normalize=normalize, generator=generator)
    layer = perturb(layer.double(), seed, scale=draw(st.sampled_from((0.0, 0.3, 3.0))))
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
    return layer


@SETTINGS
@given(layer=structured_cases())
def test_bounds_are_never_below_the_svd_of_the_explicit_matrix(layer):
    truth = float(np.linalg.norm(oracle(layer), 2))
    bound = layer.lipschitz_bound((3, layer.in_features))
    assert bound.is_sound
    assert float(bound) >= truth * (1 - 1e-10) - 1e-300
    if getattr(layer, "normalize", False):
        assert float(bound) <= 1 + 1e-12 and truth <= 1 + 1e-12


@SETTINGS
@given(n=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
def test_orthogonal_circulant_jacobian_is_orthogonal(n, seed):
    layer = perturb(OrthogonalCirculantLinear(n, generator=seeded(seed)).double(), seed, 2.0)
    x = torch.randn(n, dtype=torch.float64, generator=seeded(seed + 1))
    jacobian = jacrev(lambda v: layer(v[None])[0])(x).detach()
    identity = torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(jacobian.T @ jacobian, identity, atol=1e-12, rtol=0)
    torch.testing.assert_close(jacobian @ jacobian.T, identity, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("shape", "name"), [(s, n) for s, n in ALL_CASES
                                             if s in ((4, 9), (9, 4), (6, 6))])
def test_gradcheck_in_float64(shape, name):
    layer = build(shape, name)
    names = [n for n, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    x = torch.randn(2, shape[0], dtype=torch.float64, generator=seeded(5), requires_grad=True)

    def run(inputs, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights, strict=True)),
                                          (inputs,))

    assert torch.autograd.gradcheck(run, (x, *values))
    # the norm bound is differentiable too (a training regularizer can use it)
    bound = _BoundOf(layer)

    def run_bound(*weights):
        return torch.func.functional_call(
            bound, {f"layer.{n}": w for n, w in zip(names, weights, strict=True)}, (x,))

    assert torch.autograd.gradcheck(run_bound, values)


class _BoundOf(nn.Module):
    """``forward`` returns the layer's lipschitz_bound value (for functional_call)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.lipschitz_bound(tuple(x.shape)).value


def test_parameter_counts_match_the_formula_and_the_papers_networks():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for n in (8, 3072):
        assert count(DiagonalCirculantLinear(n, n)) == 3 * n  # c, d, b
        assert count(CirculantLinear(n)) == 2 * n
        assert count(OrthogonalCirculantLinear(n)) == 2 * n
    assert count(DiagonalCirculantLinear(10, 4, depth=3)) == 3 * 10 + 2 * 10 + 4 + 4
    assert count(DiagonalCirculantLinear(4, 10, depth=2)) == 2 * 10 + 10 + 10 + 10
    assert count(ToeplitzLinear(7, 3)) == 7 + 3 - 1 + 3
    # arXiv 1901.10255, flattened CIFAR-10: k hidden 3072 DC layers + a 3072 -> 10 DC head
    for hidden, reported in ((2, 21_000), (5, 49_000)):
        total = hidden * count(DiagonalCirculantLinear(3072, 3072)) \
            + count(DiagonalCirculantLinear(3072, 10))
        assert total == 3 * 3072 * hidden + 3072 + 20
        assert abs(total - reported) / reported < 0.03


def test_paper_initialization_statistics():
    layer = DiagonalCirculantLinear(2048, 2048, depth=2, generator=seeded(0))
    first, second = layer.kernels.detach()
    assert abs(float(first.std()) - (2 / 2048) ** 0.5) < 0.05 * (2 / 2048) ** 0.5
    assert abs(float(second.std()) - (1 / 2048) ** 0.5) < 0.05 * (1 / 2048) ** 0.5
    for diagonal in layer.diagonals:
        assert set(diagonal.detach().unique().tolist()) == {-1.0, 1.0}
    assert float(layer.bias.detach().abs().max()) < 0.1
    again = DiagonalCirculantLinear(2048, 2048, depth=2, generator=seeded(0))
    assert torch.equal(again.kernels, layer.kernels)


@pytest.mark.parametrize(("shape", "name"), [(s, n) for s, n in ALL_CASES
                                             if s in ((4, 9), (9, 4), (7, 7))])
def test_network_bound_export_and_state_dict(shape, name):
    layer = build(shape, name)
    model = nn.Sequential(layer, nn.LeakyReLU(0.2), nn.Linear(shape[1], 3)).double().eval()
    x = torch.randn(6, shape[0], dtype=torch.float64, generator=seeded(1))
    report = lipschitz_bound(model, x)
    jac = torch.stack([jacrev(lambda v: model(v[None])[0])(xi) for xi in x]).detach()
    truth = float(torch.linalg.matrix_norm(jac, 2).max())
    assert float(report.value.detach()) >= truth * (1 - 1e-10)
    plain = to_vanilla(model)
    assert isinstance(plain[0], nn.Linear) and not any(
        isinstance(m, structured._StructuredLinear) for m in plain.modules())
    torch.testing.assert_close(plain(x), model(x), atol=1e-12, rtol=0)
    copy = factories(*shape)[name](seeded(99)).double()
    copy.load_state_dict(layer.state_dict())
    torch.testing.assert_close(copy(x), layer(x), atol=0, rtol=0)


def test_normalized_layers_stay_below_one_after_expanding_training():
    for layer in (DiagonalCirculantLinear(6, 6, depth=3, normalize=True, generator=seeded(0)),
                  ToeplitzLinear(5, 7, normalize=True, generator=seeded(1)),
                  CirculantLinear(6, normalize=True, generator=seeded(2)),
                  OrthogonalCirculantLinear(6, generator=seeded(3))):
        layer = layer.double()
        train_to_expand(layer, (layer.in_features,), seed=4)
        truth = float(np.linalg.norm(oracle(layer), 2))
        assert truth <= 1 + 1e-12
        assert truth <= float(layer.lipschitz_bound((1, layer.in_features))) * (1 + 1e-12)


def test_fft_size_is_smooth_and_minimal():
    assert [fft_size(n) for n in (1, 7, 11, 13, 97, 1567)] == [1, 8, 12, 15, 100, 1600]


def test_errors_name_the_layer_and_the_fix(monkeypatch):
    layer = DiagonalCirculantLinear(4, 6)
    with pytest.raises(BadInputError, match="last dimension is 4"):
        layer(torch.zeros(2, 5))
    with pytest.raises(BadInputError, match="DiagonalCirculantLinear"):
        layer.lipschitz_bound((2, 5))
    with pytest.raises(BadInputError, match="unknown method"):
        layer.lipschitz_bound((2, 4), method="svd")
    with pytest.raises(UnsoundRequestError):
        ToeplitzLinear(3, 3).lipschitz_bound((1, 3), method="power")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(BadInputError, match="positive integer"):
            DiagonalCirculantLinear(4, 4, depth=bad)
        with pytest.raises(BadInputError, match="positive integer"):
            CirculantLinear(bad)
    monkeypatch.setattr(structured, "MAX_EXPLICIT_ENTRIES", 20)
    with pytest.raises(BadInputError, match="explicit"):
        to_vanilla(nn.Sequential(layer))
    assert layer.linear_weight() is None  # too large: no pairwise form, the bound still works
    model = nn.Sequential(layer, nn.ReLU(), DiagonalCirculantLinear(6, 4))
    report = lipschitz_bound(model.eval(), torch.zeros(2, 4))
    assert report.last_linear is None and report.guarantee == "upper"
    monkeypatch.setattr(structured, "MAX_EXPLICIT_ENTRIES", 2**24)
    monkeypatch.setattr(structured, "MAX_PAIRWISE_OUTPUTS", 2)
    assert layer.linear_weight() is None and layer.explicit_matrix().shape == (6, 4)
    with torch.no_grad():
        layer.kernels[0, 0] = float("nan")
    with pytest.raises(BadInputError, match="NaN"):
        layer.lipschitz_bound((1, 4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["dc3", "toeplitz-normalized", "orthogonal", "circulant"])
def test_layers_run_on_the_device_of_their_weights(name):
    shape = (7, 7)
    layer = build(shape, name)
    device_layer = build(shape, name).cuda()
    x = torch.randn(4, 7, dtype=torch.float64, generator=seeded(0))
    out = device_layer(x.cuda())
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), layer(x), atol=1e-12, rtol=0)
    bound = device_layer.lipschitz_bound((4, 7))
    assert bound.value.is_cuda
    assert float(bound) == pytest.approx(float(layer.lipschitz_bound((4, 7))), rel=1e-12)
    assert to_vanilla(nn.Sequential(device_layer))[0].weight.is_cuda
    fresh = DiagonalCirculantLinear(5, 6, depth=2, device="cuda", generator=seeded(1))
    assert all(p.is_cuda for p in fresh.parameters())
