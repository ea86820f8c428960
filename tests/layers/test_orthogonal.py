"""Orthogonal layers: orthonormal columns/rows; Bjorck reports its true norm; FFT Cayley."""

from __future__ import annotations

import pytest
import torch

from lipcert.errors import UnsupportedLayerError
from lipcert.layers import CayleyConv2d, OrthogonalLinear


@pytest.mark.parametrize("method", ["cayley", "matrix_exp", "bjorck"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_weight_is_orthogonal(method, shape):
    torch.manual_seed(0)
    out_features, in_features = shape
    layer = OrthogonalLinear(in_features, out_features, method=method, n_iter=30).double()
    singular = torch.linalg.svdvals(layer.weight.detach())
    torch.testing.assert_close(singular, torch.ones_like(singular), rtol=0, atol=1e-6)


def test_few_bjorck_steps_report_the_true_norm():
    torch.manual_seed(0)
    layer = OrthogonalLinear(6, 6, method="bjorck", n_iter=1).double()
    singular = torch.linalg.svdvals(layer.weight.detach())
    assert singular.min() < 0.9  # not orthogonal yet
    assert singular.max() <= 1 + 1e-12  # but still 1-Lipschitz
    assert float(layer.lipschitz_bound((1, 6))) == pytest.approx(float(singular.max()), rel=1e-9)


@pytest.mark.parametrize("channels", [(3, 3), (2, 4), (4, 2)], ids=["square", "wide", "narrow"])
def test_cayley_conv_singular_values(channels, explicit_matrix):
    torch.manual_seed(1)
    c_in, c_out = channels
    layer = CayleyConv2d(c_in, c_out, 3).double()
    with torch.no_grad():
        matrix = explicit_matrix(lambda x: layer(x) - layer.bias.view(1, -1, 1, 1), (c_in, 5, 6))
    singular = torch.linalg.svdvals(matrix)
    kept = min(c_in, c_out) * 30
    torch.testing.assert_close(singular[:kept], torch.ones(kept, dtype=torch.float64),
                               rtol=0, atol=1e-9)
    assert float(layer.lipschitz_bound((1, c_in, 5, 6))) == pytest.approx(1.0, abs=1e-9)


def test_cayley_conv_rejects_stride():
    with pytest.raises(UnsupportedLayerError):
        CayleyConv2d(2, 2, 3, stride=2)
