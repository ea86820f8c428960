"""AOL: the rescaled operator has norm <= 1 (exact SVD of the explicit operator)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lipcert.errors import UnsupportedLayerError
from lipcert.layers import AOLConv2d, AOLLinear


def _conv_matrix(layer: AOLConv2d, size: tuple[int, int], explicit_matrix) -> torch.Tensor:
    with torch.no_grad():
        weight = layer.weight
        return explicit_matrix(lambda x: layer._conv_forward(x, weight, None),
                               (layer.in_channels, *size))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), seed=st.integers(0, 10_000),
       scale=st.floats(1e-3, 1e3))
def test_linear_rescaled_weight_has_norm_at_most_one(rows, cols, seed, scale):
    torch.manual_seed(seed)
    layer = AOLLinear(cols, rows).double()
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(scale)
    norm = torch.linalg.svdvals(layer.weight.detach()).max()
    assert norm <= 1 + 1e-12
    assert float(layer.lipschitz_bound((1, cols))) == pytest.approx(float(norm), rel=1e-9)


CONVS = {
    "same": dict(kernel_size=3, padding=1),
    "valid": dict(kernel_size=3),
    "k5-stride2": dict(kernel_size=5, stride=2, padding=2),
    "dilated": dict(kernel_size=3, dilation=2, padding=2),
    "grouped": dict(kernel_size=3, groups=2, padding=1),
    "circular": dict(kernel_size=3, padding=1, padding_mode="circular"),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_operator_norm_at_most_one(name, explicit_matrix):
    torch.manual_seed(len(name))
    layer = AOLConv2d(4, 6, **CONVS[name]).double()
    for size in [(5, 5), (7, 6)]:
        exact = torch.linalg.svdvals(_conv_matrix(layer, size, explicit_matrix)).max()
        assert exact <= 1 + 1e-12
        assert float(layer.lipschitz_bound((1, 4, *size))) >= float(exact) - 1e-9
    assert exact >= 0.3  # rescaling, not collapse


def test_norm_increasing_paddings_are_refused():
    with pytest.raises(UnsupportedLayerError, match="padding_mode"):
        AOLConv2d(2, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(UnsupportedLayerError, match="circular"):
        AOLConv2d(2, 2, 3, padding=2, padding_mode="circular")  # repeats output rows


def test_rescaling_is_the_documented_formula():
    torch.manual_seed(0)
    layer = AOLLinear(5, 3).double()
    raw = layer.parametrizations.weight.original.detach()
    d = (raw.T @ raw).abs().sum(1)
    torch.testing.assert_close(layer.weight.detach(), raw / d.sqrt())
    conv = AOLConv2d(2, 3, 3, padding=1).double()
    kernel = conv.parametrizations.weight.original.detach()
    gram = F.conv2d(kernel.transpose(0, 1), kernel.transpose(0, 1), padding=2)
    d = gram.abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(conv.weight.detach(), kernel / d.sqrt().view(1, -1, 1, 1))
