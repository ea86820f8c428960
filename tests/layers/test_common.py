"""Checks every lipcert layer must pass: Jacobian norm <= 1 (float64), lipschitz_bound above
it, gradients, state_dict round-trip, to_vanilla equivalence with plain torch modules."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import seeded
from torch import nn

from lipcert.layers import (
    AOLConv2d,
    AOLLinear,
    CayleyConv2d,
    CPLConv2d,
    CPLLinear,
    FirstChannels,
    GroupSort,
    HouseholderActivation,
    InvertibleDownsample,
    L2NormPool2d,
    MaxMin,
    NormalizedLinear,
    OrthogonalLinear,
    SLLConv2d,
    SLLLinear,
    SpectralConv2d,
    SpectralLinear,
    ZeroChannelPad,
    to_vanilla,
)

# name -> (factory(seed), sample shape)
CASES = {
    "sll-linear": (lambda s: SLLLinear(5, 7, generator=seeded(s)), (5,)),
    "sll-conv3": (lambda s: SLLConv2d(3, 4, 3, generator=seeded(s)), (3, 6, 6)),
    "sll-conv5": (lambda s: SLLConv2d(2, 3, 5, generator=seeded(s)), (2, 5, 5)),
    "cpl-linear": (lambda s: CPLLinear(5, 7, generator=seeded(s)), (5,)),
    "cpl-conv3": (lambda s: CPLConv2d(3, 4, 3, generator=seeded(s)), (3, 6, 6)),
    "aol-linear": (lambda s: AOLLinear(6, 4), (6,)),
    "aol-conv": (lambda s: AOLConv2d(3, 4, 3, padding=1), (3, 6, 6)),
    "aol-conv-strided": (lambda s: AOLConv2d(4, 2, 3, stride=2, groups=2), (4, 7, 7)),
    "spectral-linear": (lambda s: SpectralLinear(6, 4), (6,)),
    "spectral-conv": (lambda s: SpectralConv2d(3, 4, 3, padding=1, input_size=6), (3, 6, 6)),
    "spectral-conv-circular": (lambda s: SpectralConv2d(
        2, 3, 3, padding=1, padding_mode="circular", input_size=(5, 6)), (2, 5, 6)),
    "orthogonal-cayley": (lambda s: OrthogonalLinear(6, 4), (6,)),
    "orthogonal-exp": (lambda s: OrthogonalLinear(4, 6, method="matrix_exp"), (4,)),
    "orthogonal-bjorck": (lambda s: OrthogonalLinear(5, 5, method="bjorck"), (5,)),
    "cayley-conv": (lambda s: CayleyConv2d(3, 3, 3, generator=seeded(s)), (3, 5, 6)),
    "groupsort": (lambda s: GroupSort(3), (6, 2, 2)),
    "maxmin": (lambda s: MaxMin(), (4,)),
    "householder": (lambda s: _householder(s), (4, 3, 3)),
    "l2pool": (lambda s: L2NormPool2d(2), (2, 4, 4)),
    "downsample": (lambda s: InvertibleDownsample(2), (2, 4, 4)),
    "zero-pad": (lambda s: ZeroChannelPad(5), (3, 2, 2)),
    "first-channels": (lambda s: FirstChannels(2), (4, 2, 2)),
}


def _householder(seed: int) -> HouseholderActivation:
    layer = HouseholderActivation(4)
    with torch.no_grad():
        layer.theta.uniform_(-3.0, 3.0, generator=seeded(seed))
    return layer


def _build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = CASES[name]
    torch.manual_seed(seed)
    return factory(seed).double().eval(), shape


@pytest.mark.parametrize("name", sorted(CASES))
def test_jacobian_norm_at_most_one_and_below_bound(name, jacobian_norm):
    layer, shape = _build(name)
    norm = jacobian_norm(layer, shape)
    assert norm <= 1 + 1e-5, f"{name}: Jacobian norm {norm}"
    bound = layer.lipschitz_bound((2, *shape))
    assert bound.is_sound
    assert float(bound) >= norm - 1e-9


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_flow_and_state_dict_round_trip(name):
    layer, shape = _build(name, seed=1)
    layer.train()
    x = torch.randn(3, *shape, dtype=torch.float64, generator=seeded(2), requires_grad=True)
    layer(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x = x.detach()
    for pname, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname
    layer.eval()
    twin, _ = _build(name, seed=7)
    twin.load_state_dict(layer.state_dict())
    twin.eval()
    torch.testing.assert_close(twin(x), layer(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_vanilla_matches_with_plain_modules(name):
    layer, shape = _build(name, seed=3)
    layer = layer.float()
    x = torch.randn(4, *shape, generator=seeded(4))
    expected = layer(x)
    plain = to_vanilla(layer)
    assert all(type(m).__module__.startswith("torch.") for m in plain.modules())
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-5)
    assert not any(p.requires_grad and p.grad is not None for p in plain.parameters())


def test_normalized_linear_bound_is_its_true_norm(jacobian_norm):
    layer = NormalizedLinear(6, 10).double()
    norm = jacobian_norm(layer, (6,), n_points=4)
    exact = float(torch.linalg.svdvals(layer.linear_weight().detach()).max())
    assert norm == pytest.approx(exact, rel=1e-9)
    assert float(layer.lipschitz_bound((1, 6))) == pytest.approx(exact, rel=1e-9)
    assert exact > 1.2  # ten unit rows in six dimensions cannot be orthogonal
