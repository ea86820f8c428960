"""AOL: the rescaled operator has norm <= 1 (exact SVD of the explicit operator)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lipcert.errors import UnsupportedLayerError
from lipcert.layers import AOLConv2d, AOLLinear


def randomized(layer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The layer with a Gaussian raw weight: the layers start orthogonal, where the rescaling
    is trivially tight, so the bounds are tested away from that start."""
    raw = layer.parametrizations.weight.original
    with torch.no_grad():
        raw.copy_(torch.randn(raw.shape, generator=torch.Generator().manual_seed(seed),
                              dtype=raw.dtype))
    return layer


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
    layer = randomized(AOLLinear(cols, rows).double(), seed)
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
    layer = randomized(AOLConv2d(4, 6, **CONVS[name]).double(), len(name))
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
    layer = randomized(AOLLinear(5, 3).double())
    raw = layer.parametrizations.weight.original.detach()
    d = (raw.T @ raw).abs().sum(1)
    torch.testing.assert_close(layer.weight.detach(), raw / d.sqrt())
    conv = randomized(AOLConv2d(2, 3, 3, padding=1).double())
    kernel = conv.parametrizations.weight.original.detach()
    gram = F.conv2d(kernel.transpose(0, 1), kernel.transpose(0, 1), padding=2)
    d = gram.abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(conv.weight.detach(), kernel / d.sqrt().view(1, -1, 1, 1))


@pytest.mark.parametrize("cin, cout, groups", [(4, 4, 1), (3, 6, 1), (4, 4, 2), (6, 6, 3)])
def test_layers_start_as_isometries(cin, cout, groups, explicit_matrix):
    """Orthogonal / delta-orthogonal initialization: every singular value of the explicit
    operator is 1 (out >= in per group), so signals neither shrink nor grow at the start."""
    torch.manual_seed(cin + cout + groups)
    dense = AOLLinear(cin, cout).double()
    torch.testing.assert_close(torch.linalg.svdvals(dense.weight.detach()),
                               torch.ones(cin, dtype=torch.float64))
    conv = AOLConv2d(cin, cout, 3, padding=1, groups=groups).double()
    values = torch.linalg.svdvals(_conv_matrix(conv, (5, 4), explicit_matrix))
    torch.testing.assert_close(values, torch.ones_like(values))
    assert float(conv.lipschitz_bound((1, cin, 5, 4))) == pytest.approx(1.0, abs=1e-9)


def test_a_narrowing_layer_starts_as_a_projection():
    torch.manual_seed(0)
    dense = AOLLinear(6, 2).double()
    values = torch.linalg.svdvals(dense.weight.detach())
    assert float(values.max()) <= 1 + 1e-12
    assert float(values.min()) > 0.1  # rescaled rows of an orthogonal matrix, not a collapse
