"""to_vanilla on a whole network mixing every layer family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers import (
    AOLConv2d,
    CayleyConv2d,
    CPLConv2d,
    CPLLinear,
    FirstChannels,
    GroupSort,
    InvertibleDownsample,
    L2NormPool2d,
    MaxMin,
    NormalizedLinear,
    OrthogonalLinear,
    SLLConv2d,
    SLLLinear,
    SpectralConv2d,
    ZeroChannelPad,
    to_vanilla,
)


def _network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        ZeroChannelPad(4),
        SLLConv2d(4, 6, 3),
        CPLConv2d(4, 4, 3),
        AOLConv2d(4, 4, 3, padding=1),
        MaxMin(),
        SpectralConv2d(4, 4, 3, padding=1, input_size=8),
        CayleyConv2d(4, 4, 3),
        InvertibleDownsample(2),
        L2NormPool2d(2),
        nn.Flatten(),
        SLLLinear(64, 16),
        CPLLinear(64, 16),
        OrthogonalLinear(64, 12),
        GroupSort(4),
        FirstChannels(10),
        NormalizedLinear(10, 3),
    )


def test_whole_network_exports_to_plain_torch():
    model = _network().eval()
    x = torch.rand(5, 2, 8, 8)
    expected = model(x)
    plain = to_vanilla(model, input_shape=(1, 2, 8, 8))
    assert all(type(m).__module__.startswith("torch.") for m in plain.modules())
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model(x), expected)  # the original is untouched
    assert type(model[1]) is SLLConv2d


def test_export_recomputes_instead_of_trusting_the_cache():
    model = _network().eval()
    x = torch.rand(2, 2, 8, 8)
    model(x)  # fills CPL's cache and records input sizes
    with torch.no_grad():
        model[2].weight.data.mul_(2.0)
        model[3].parametrizations.weight.original.data.mul_(-1.5)
    expected = model(x)
    torch.testing.assert_close(to_vanilla(model)(x), expected, rtol=0, atol=1e-5)


def test_export_needs_sizes_for_size_dependent_layers():
    with pytest.raises(BadInputError, match="to_vanilla"):
        to_vanilla(_network())
