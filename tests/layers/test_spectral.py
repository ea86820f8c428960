"""Spectral normalization by a guaranteed bound on the true operator: norm <= 1, close to 1."""

from __future__ import annotations

import pytest
import torch

from lipcert.errors import BadInputError
from lipcert.layers import SpectralConv2d, SpectralLinear


def test_linear_norm_is_at_most_and_close_to_one():
    for seed in range(5):
        torch.manual_seed(seed)
        layer = SpectralLinear(9, 6).double()
        norm = float(torch.linalg.svdvals(layer.weight.detach()).max())
        assert 0.98 <= norm <= 1 + 1e-12


@pytest.mark.parametrize("options", [dict(padding=1), dict(padding=1, padding_mode="circular"),
                                     dict(stride=2, padding=1), dict(padding=0)],
                         ids=["zeros", "circular", "stride2", "valid"])
def test_conv_operator_norm_at_most_and_close_to_one(options, explicit_matrix):
    torch.manual_seed(1)
    layer = SpectralConv2d(3, 4, 3, input_size=8, **options).double()
    with torch.no_grad():
        matrix = explicit_matrix(lambda x: layer._conv_forward(x, layer.weight, None), (3, 8, 8))
    exact = float(torch.linalg.svdvals(matrix).max())
    assert exact <= 1 + 1e-9
    assert exact >= 0.9
    assert float(layer.lipschitz_bound((1, 3, 8, 8))) >= exact - 1e-9


def test_input_size_is_enforced():
    layer = SpectralConv2d(2, 2, 3, padding=1, input_size=(6, 5))
    layer(torch.randn(1, 2, 4, 5))  # smaller is fine with zero padding (norm is monotone)
    with pytest.raises(BadInputError, match="input_size"):
        layer(torch.randn(1, 2, 7, 5))
    circular = SpectralConv2d(2, 2, 3, padding=1, padding_mode="circular", input_size=6)
    with pytest.raises(BadInputError, match="input_size"):
        circular(torch.randn(1, 2, 5, 5))
    with pytest.raises(BadInputError):
        SpectralConv2d(2, 2, 3, input_size=0)
