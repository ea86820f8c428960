"""Activations, pooling and channel operations: values, exact constants, error cases."""

from __future__ import annotations

import math

import pytest
import torch

from lipcert.errors import BadInputError
from lipcert.layers import (
    FirstChannels,
    GroupSort,
    HouseholderActivation,
    InvertibleDownsample,
    L2NormPool2d,
    MaxMin,
    ZeroChannelPad,
)


def test_activation_values():
    x = torch.tensor([[3.0, -1.0, 0.5, 2.0, 7.0, -4.0]])
    torch.testing.assert_close(MaxMin()(x), torch.tensor([[3.0, -1.0, 2.0, 0.5, 7.0, -4.0]]))
    torch.testing.assert_close(GroupSort(3)(x), torch.tensor([[3.0, 0.5, -1.0, 7.0, 2.0, -4.0]]))
    torch.testing.assert_close(HouseholderActivation(6)(x), MaxMin()(x))
    with pytest.raises(BadInputError, match="divisible"):
        GroupSort(4).lipschitz_bound((1, 6))
    with pytest.raises(BadInputError, match="even"):
        HouseholderActivation(3)
    with pytest.raises(BadInputError, match="divisible"):
        GroupSort(4)(x)
    with pytest.raises(BadInputError, match="channels"):
        HouseholderActivation(4)(x)


@pytest.mark.parametrize("layer", [GroupSort(2), HouseholderActivation(4)], ids=["gs", "hh"])
def test_gradient_norm_preserving(layer):
    """Jacobian orthogonal: its smallest singular value is 1 as well."""
    layer = layer.double()
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    jac = torch.func.jacrev(lambda z: layer(z[None])[0])(x).detach().reshape(36, 36)
    singular = torch.linalg.svdvals(jac)
    torch.testing.assert_close(singular, torch.ones_like(singular))


def test_l2_pool_values_overlap_bound_and_zero_windows(jacobian_norm):
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[0.0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])
    torch.testing.assert_close(L2NormPool2d(2)(x).flatten(), expected.square().sum(1).sqrt())
    overlapping = L2NormPool2d(3, stride=1).double()
    bound = overlapping.lipschitz_bound((1, 2, 5, 5))
    assert bound.guarantee == "upper" and float(bound) == pytest.approx(3.0)
    assert jacobian_norm(overlapping, (2, 5, 5), n_points=8) <= float(bound)
    zeros = torch.zeros(1, 1, 4, 4, requires_grad=True)
    L2NormPool2d(2)(zeros).sum().backward()
    assert torch.isfinite(zeros.grad).all()
    with pytest.raises(BadInputError):
        L2NormPool2d(3).lipschitz_bound((1, 1, 2, 2))


def test_downsample_and_channel_ops():
    x = torch.randn(2, 3, 4, 6)
    y = InvertibleDownsample(2)(x)
    assert y.shape == (2, 12, 2, 3)
    assert y.norm() == pytest.approx(float(x.norm()))
    with pytest.raises(BadInputError, match="divisible"):
        InvertibleDownsample(2).lipschitz_bound((1, 3, 5, 6))
    with pytest.raises(BadInputError, match="divisible"):
        InvertibleDownsample(2)(torch.randn(1, 3, 5, 6))
    with pytest.raises(BadInputError, match="window"):
        L2NormPool2d(3)(torch.randn(1, 1, 2, 2))
    padded = ZeroChannelPad(5)(x)
    assert padded.shape == (2, 5, 4, 6) and torch.equal(padded[:, :3], x)
    assert padded[:, 3:].abs().sum() == 0
    assert ZeroChannelPad(4)(torch.ones(2, 3)).tolist() == [[1.0, 1.0, 1.0, 0.0]] * 2
    with pytest.raises(BadInputError):
        ZeroChannelPad(2).lipschitz_bound((1, 3, 4, 4))
    with pytest.raises(BadInputError):
        ZeroChannelPad(2)(x)
    with pytest.raises(BadInputError):
        FirstChannels(4)(x)
    assert torch.equal(FirstChannels(2)(x), x[:, :2])
    with pytest.raises(BadInputError):
        FirstChannels(4).lipschitz_bound((1, 3))
    assert math.isclose(float(FirstChannels(2).lipschitz_bound((1, 3))), 1.0)
