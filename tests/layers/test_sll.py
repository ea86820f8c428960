"""SLL: the Schur-test T, no epsilon, CPL as a special case, guarantee after training."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_helpers import seeded, train_to_expand

from lipcert.errors import BadInputError
from lipcert.layers import CPLLinear, SLLConv2d, SLLLinear


def _randomize_q(layer, seed: int) -> None:
    with torch.no_grad():
        layer.log_q.normal_(0.0, 1.0, generator=seeded(seed))


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv_t_dominates_explicit_gram(kernel_size, explicit_matrix):
    """SLL's condition W^T W <= T on the explicit zero-padded operator, for odd kernels."""
    layer = SLLConv2d(2, 3, kernel_size, generator=seeded(kernel_size)).double()
    _randomize_q(layer, 1)
    shape = (2, 5, 5)
    with torch.no_grad():
        matrix = explicit_matrix(layer.apply_map, shape)  # (inner*25, channels*25)
        t = layer.schur_t().repeat_interleave(25)
        gap = torch.linalg.eigvalsh(torch.diag(t) - matrix @ matrix.T)
    assert gap.min() >= -1e-10


@settings(max_examples=25, deadline=None)
@given(features=st.integers(1, 8), inner=st.integers(1, 8), seed=st.integers(0, 10_000),
       scale=st.floats(1e-3, 1e3), q_scale=st.floats(0.0, 5.0))
def test_dense_t_dominates_gram_and_bound_is_sound(features, inner, seed, scale, q_scale):
    layer = SLLLinear(features, inner, generator=seeded(seed)).double()
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.log_q.normal_(0.0, q_scale + 1e-12, generator=seeded(seed + 1))
        weight, t = layer.weight, layer.schur_t()
        assert torch.linalg.eigvalsh(torch.diag(t) - weight @ weight.T).min() >= -1e-9 * t.max()
        root = t.rsqrt()[:, None] * weight  # T^{-1/2} W^T
        step = torch.linalg.matrix_norm(root, ord=2) ** 2
    assert float(layer.lipschitz_bound((1, features))) >= max(1.0, 2 * float(step) - 1) - 1e-9


def test_t_is_the_plain_weighted_row_sum():
    """No epsilon: t_i = sum_j |W^T W|_ij exp(q_j - q_i) exactly."""
    layer = SLLLinear(4, 6, generator=seeded(0)).double()
    _randomize_q(layer, 2)
    with torch.no_grad():
        gram = (layer.weight @ layer.weight.T).abs()
        q = layer.log_q
        expected = (gram * torch.exp(q[None, :] - q[:, None])).sum(1)
        torch.testing.assert_close(layer.schur_t(), expected, rtol=1e-12, atol=0)


def test_zero_inner_channel_is_dropped_without_nan():
    layer = SLLLinear(4, 3, generator=seeded(0)).double()
    with torch.no_grad():
        layer.weight[1] = 0.0
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    assert float(layer.lipschitz_bound(x.shape)) <= 1 + 1e-12


def test_t_equal_to_norm_squared_recovers_cpl(jacobian_norm):
    """With T = ||W||^2 I (a valid choice, T >= W^T W), SLL's formula is CPL's layer."""
    sll = SLLLinear(5, 7, generator=seeded(3)).double()
    cpl = CPLLinear(5, 7).double().eval()
    cpl.load_state_dict({"weight": sll.weight.detach(), "bias": sll.bias.detach(),
                         "power_vector": cpl.power_vector}, strict=True)
    x = torch.randn(9, 5, dtype=torch.float64, generator=seeded(4))
    sigma = cpl.certified_norm(x.shape)
    exact = torch.linalg.matrix_norm(sll.weight.detach(), ord=2)
    assert exact <= sigma <= exact * (1 + 1e-3)
    weight = sll.weight.detach()
    gap = torch.linalg.eigvalsh(sigma**2 * torch.eye(7, dtype=torch.float64) - weight @ weight.T)
    assert gap.min() >= -1e-10
    torch.testing.assert_close(sll.residual(x, 1 / sigma**2), cpl(x), rtol=0, atol=1e-12)

    class AsCPL(torch.nn.Module):
        def forward(self, z):
            return sll.residual(z, 1 / sigma**2)

    assert jacobian_norm(AsCPL(), (5,), n_points=12) <= 1 + 1e-9


@pytest.mark.parametrize("make", [lambda: SLLLinear(4, 6, generator=seeded(5)),
                                  lambda: SLLConv2d(2, 4, 3, generator=seeded(6))],
                         ids=["linear", "conv"])
def test_guarantee_survives_sgd(make, jacobian_norm):
    layer = make().double()
    shape = (4,) if layer.kernel_size is None else (2, 5, 5)
    train_to_expand(layer, shape, seed=7)
    assert not torch.equal(layer.log_q.detach(), torch.zeros_like(layer.log_q))
    norm = jacobian_norm(layer, shape, n_points=16, seed=8)
    assert norm <= 1 + 1e-5
    assert float(layer.lipschitz_bound((1, *shape))) >= norm - 1e-9
    with torch.no_grad():
        layer.bias.fill_(100.0)  # every ReLU active: J = I - 2 A^* D A, the worst case
    assert jacobian_norm(layer, shape, n_points=4, seed=9) <= 1 + 1e-5


def test_bad_arguments_and_weights():
    with pytest.raises(BadInputError, match="odd"):
        SLLConv2d(3, 4, kernel_size=4)
    layer = SLLConv2d(3, 4)
    with pytest.raises(BadInputError, match="channels"):
        layer(torch.randn(1, 2, 5, 5))
    with pytest.raises(BadInputError):
        layer.lipschitz_bound((1, 3, 5))
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(BadInputError, match="NaN"):
        layer.lipschitz_bound((1, 3, 5, 5))


def _train_with_adam(layer, shape, steps: int = 300, seed: int = 0) -> None:
    """Adam steps that expand distances: drives the Schur weights q over many orders of
    magnitude, where float32 sums used to round t down (bound up to 1 + 2e-6)."""
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    generator = seeded(seed)
    for _ in range(steps):
        x = torch.randn(shape, generator=generator)
        nearby = x + 0.01 * torch.randn(shape, generator=generator)
        loss = -(layer(x) - layer(nearby)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_float32_layer_is_one_lipschitz_in_its_precision_after_training(kind):
    """#15: the T^{-1} a float32 layer uses is rounded down from float64, so its own bound and
    an independent float64 SVD of the map it computes stay <= 1 + 1e-6."""
    torch.manual_seed(0)
    if kind == "linear":
        layer, shape = SLLLinear(64, 64, generator=seeded(1)), (4, 64)
    else:
        layer, shape = SLLConv2d(4, 8, 3, generator=seeded(1)), (4, 4, 6, 6)
    _train_with_adam(layer, shape)
    assert layer.weight.dtype == torch.float32
    assert float(layer.log_q.max() - layer.log_q.min()) > 5.0  # the regime that used to fail
    assert float(layer.lipschitz_bound(shape)) <= 1 + 1e-6
    with torch.no_grad():
        inverse_t = layer.inverse_t().double()
        weight = layer.weight.double()
        if kind == "linear":
            operator = inverse_t.sqrt()[:, None] * weight  # T^{-1/2} W^T
        else:  # the convolution W^T x on a 6x6 grid, as an explicit matrix
            basis = torch.eye(4 * 36, dtype=torch.float64).view(-1, 4, 6, 6)
            columns = torch.nn.functional.conv2d(basis, weight, padding=1)
            columns = columns * inverse_t.sqrt().view(1, -1, 1, 1)
            operator = columns.reshape(4 * 36, -1).T
        step = torch.linalg.matrix_norm(operator, ord=2) ** 2
    assert 2 * float(step) - 1 <= 1 + 1e-6
