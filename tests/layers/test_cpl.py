"""CPL: guaranteed normalizer in eval mode, power iteration in training, caching, buffers."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import seeded, train_to_expand

from lipcert.bounds import lipschitz_bound
from lipcert.errors import BadInputError
from lipcert.layers import CPLConv2d, CPLLinear, to_vanilla


def _exact_conv_norm(layer: CPLConv2d, size: int, explicit_matrix) -> float:
    with torch.no_grad():
        matrix = explicit_matrix(layer.apply_map, (layer.features, size, size))
    return float(torch.linalg.matrix_norm(matrix, ord=2))


@pytest.mark.parametrize("size", [4, 7])
def test_eval_normalizer_is_an_upper_bound_at_each_size(size, explicit_matrix):
    layer = CPLConv2d(2, 3, 3, generator=seeded(size)).double().eval()
    exact = _exact_conv_norm(layer, size, explicit_matrix)
    sigma = float(layer.certified_norm((1, 2, size, size)))
    assert exact <= sigma <= 1.5 * exact  # circular norm on the padded grid: loose when tiny


def test_cache_follows_input_size_and_weight_changes(explicit_matrix):
    layer = CPLConv2d(2, 3, 3, generator=seeded(0)).double().eval()
    small, large = layer.certified_norm((1, 2, 3, 3)), layer.certified_norm((1, 2, 8, 8))
    assert small < large  # zero-padded norm grows with the input size
    with torch.no_grad():
        layer.weight.data.mul_(3.0)  # bypasses autograd's version counter
    assert float(layer.certified_norm((1, 2, 8, 8))) == pytest.approx(3 * float(large), rel=1e-9)
    assert float(layer.certified_norm((1, 2, 8, 8))) >= _exact_conv_norm(layer, 8, explicit_matrix)


@pytest.mark.parametrize("make", [lambda: CPLLinear(4, 6, generator=seeded(1)),
                                  lambda: CPLConv2d(2, 4, 3, generator=seeded(2))],
                         ids=["linear", "conv"])
def test_guarantee_survives_sgd_in_training_mode(make, jacobian_norm):
    layer = make().double().train()
    shape = (4,) if layer.kernel_size is None else (2, 5, 5)
    train_to_expand(layer, shape, seed=3)
    layer.eval()
    norm = jacobian_norm(layer, shape, n_points=16, seed=4)
    assert norm <= 1 + 1e-5
    assert float(layer.lipschitz_bound((1, *shape))) >= norm - 1e-9
    with torch.no_grad():
        layer.bias.fill_(100.0)  # every ReLU active: J = I - 2 A^* D A, the worst case
    assert jacobian_norm(layer, shape, n_points=4, seed=9) <= 1 + 1e-5


def test_power_iteration_is_an_estimate_that_converges(explicit_matrix):
    layer = CPLConv2d(2, 3, 3, generator=seeded(5)).double().train()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    exact = _exact_conv_norm(layer, 6, explicit_matrix)
    estimates = []
    with torch.no_grad():
        for _ in range(40):
            layer(x)
            estimates.append(float(layer.apply_map(layer.power_vector).norm()))
    assert max(estimates) <= exact * (1 + 1e-9)
    assert estimates[-1] >= 0.99 * exact
    assert layer.power_vector.shape == (1, 2, 6, 6)
    layer(torch.randn(1, 2, 4, 5, dtype=torch.float64))  # any input size
    assert layer.power_vector.shape == (1, 2, 4, 5)


def test_state_dict_round_trip_with_a_sized_power_vector():
    layer = CPLConv2d(2, 3, 3, generator=seeded(6)).train()
    layer(torch.randn(2, 2, 6, 6))
    fresh = CPLConv2d(2, 3, 3, generator=seeded(7))
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh.power_vector, layer.power_vector)
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(fresh.eval()(x), layer.eval()(x))


def test_to_vanilla_needs_an_input_size():
    layer = CPLConv2d(2, 3, 3, generator=seeded(8)).eval()
    with pytest.raises(BadInputError, match="input_shape"):
        to_vanilla(layer)
    x = torch.randn(2, 2, 5, 5)
    plain = to_vanilla(layer, input_shape=x.shape)
    torch.testing.assert_close(plain(x), layer(x), rtol=0, atol=1e-5)


def test_training_mode_bound_covers_the_power_iteration_normalizer():
    # in training mode sigma is a one-step power estimate below ||W||; the bound used to
    # report the eval-mode value 1 while the training-mode layer had constant 1.04
    layer = CPLLinear(6, 6, generator=seeded(11)).double().train()
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([5.0, 4.9, 4.8, 1.0, 1.0, 1.0])))
        layer.bias.fill_(1.0)  # every ReLU active
    upper = float(lipschitz_bound(layer, torch.randn(2, 6, dtype=torch.float64)))
    vector = layer.power_vector.clone()

    def next_forward(x):
        layer.power_vector.copy_(vector)
        return layer(x)

    jacobian = torch.autograd.functional.jacobian(next_forward, torch.randn(1, 6).double())
    true = float(torch.linalg.matrix_norm(jacobian.reshape(6, 6), 2))
    assert true > 1.01
    assert true <= upper * (1 + 1e-9)
    assert float(lipschitz_bound(layer.eval(), torch.randn(2, 6).double())) == pytest.approx(1.0)
