"""Per-module rules against independent computations (explicit matrices, slopes, Jacobians)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from bounds_oracles import explicit_matrix, jacobian_norms
from torch import nn
from torch.nn.utils import parametrizations

from lipcert.bounds import Normalize, find_rule, lipschitz_bound, register_rule
from lipcert.bounds.rules import apply_rule
from lipcert.errors import UnsupportedLayerError
from lipcert.linalg import NormBound

AVG_POOLS = [
    nn.AvgPool2d(2),
    nn.AvgPool2d(3, stride=1),
    nn.AvgPool2d(3, stride=2, padding=1),
    nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    nn.AvgPool2d(2, ceil_mode=True),
    nn.AvgPool2d(3, stride=2, ceil_mode=True, count_include_pad=False, padding=1),
    nn.AvgPool2d(2, divisor_override=1),
    nn.AdaptiveAvgPool2d(3),
    nn.AdaptiveAvgPool2d((2, 4)),
    nn.AvgPool1d(3, stride=2, padding=1),
    nn.AdaptiveAvgPool1d(4),
]


@pytest.mark.parametrize("pool", AVG_POOLS, ids=repr)
def test_average_pooling_bound_dominates_explicit_operator_norm(pool):
    shape = (1, 7) if "1d" in type(pool).__name__ else (1, 7, 5)
    exact = torch.linalg.matrix_norm(explicit_matrix(pool, shape), ord=2)
    bound = apply_rule(pool, torch.Size((2, *shape)), "pool")
    assert float(exact) <= float(bound) * (1 + 1e-12)
    assert float(bound) <= 2.5 * float(exact)


def test_non_overlapping_average_pooling_is_lmt_value():
    bound = apply_rule(nn.AvgPool2d(2), torch.Size((1, 3, 8, 8)), "pool")
    assert float(bound) == pytest.approx(0.5)  # 1 / sqrt(k_h k_w)
    overlapping = apply_rule(nn.AvgPool2d(3, stride=1), torch.Size((1, 3, 8, 8)), "pool")
    assert float(overlapping) == pytest.approx(math.sqrt(9 / 9))  # sqrt(c / k^2), c = 9


@pytest.mark.parametrize("pool, expected", [
    (nn.MaxPool2d(2), 1.0),
    (nn.MaxPool2d(2, stride=1), 2.0),
    (nn.MaxPool2d(3, stride=2, padding=1), 2.0),
    (nn.MaxPool2d(2, stride=1, dilation=2), 2.0),
    (nn.MaxPool1d(3, stride=1), math.sqrt(3)),
    (nn.AdaptiveMaxPool2d(3), 2.0),
])
def test_max_pooling_overlap_counts_hold_on_jacobians(pool, expected):
    shape = (1, 7) if isinstance(pool, nn.MaxPool1d) else (1, 7, 7)
    bound = apply_rule(pool, torch.Size((2, *shape)), "pool")
    assert float(bound) == pytest.approx(expected)
    points = torch.randn(64, *shape)
    assert float(jacobian_norms(pool, points).max()) <= float(bound) * (1 + 1e-12)


def test_max_pooling_count_is_attained():
    # A ramp makes the centre entry the max of both windows that contain it.
    pool = nn.MaxPool1d(2, stride=1)
    point = torch.tensor([[[0.0, 1.0, 0.0]]])
    assert float(jacobian_norms(pool, point)[0]) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("module", [nn.ReLU(), nn.LeakyReLU(0.3), nn.LeakyReLU(-2.0), nn.Tanh(),
                                    nn.Sigmoid(), nn.GELU(), nn.GELU(approximate="tanh"),
                                    nn.ELU(1.7), nn.SiLU(), nn.Softplus(beta=3.0), nn.ReLU6(),
                                    nn.Hardtanh()], ids=repr)
def test_activation_bound_is_the_largest_slope(module):
    grid = torch.linspace(-12, 12, 200_001, requires_grad=True)
    (slopes,) = torch.autograd.grad(module(grid).sum(), grid)
    # (Softplus is accepted only where its threshold jump hides below the dtype's rounding)
    bound = float(apply_rule(module, torch.Size((1, 1)), "act", torch.float32))
    assert float(slopes.abs().max()) <= bound
    assert bound <= float(slopes.abs().max()) * 1.005


def test_batch_norm_matches_its_diagonal_map():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_var.copy_(torch.tensor([0.5, 2.0, 0.1]))
    bn.weight.data.copy_(torch.tensor([1.0, -3.0, 0.2]))
    exact = torch.linalg.matrix_norm(
        explicit_matrix(lambda z: bn(z) - bn(torch.zeros_like(z)), (3, 2, 2)), ord=2)
    bound = apply_rule(bn, torch.Size((1, 3, 2, 2)), "bn")
    assert bound.guarantee == "exact"
    assert float(bound) == pytest.approx(float(exact))


@pytest.mark.parametrize("module", [nn.LayerNorm(6, eps=0.05), nn.GroupNorm(2, 4, eps=0.05)],
                         ids=repr)
def test_layer_and_group_norm_bounds_hold(module):
    module = module.double()
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-2, 1.5, module.weight.numel()))
    shape = (6,) if isinstance(module, nn.LayerNorm) else (4, 3)
    points = torch.randn(256, *shape) * torch.logspace(-3, 1, 256).view(-1, *[1] * len(shape))
    bound = apply_rule(module, torch.Size((1, *shape)), "norm")
    assert float(jacobian_norms(module, points).max()) <= float(bound)


def test_normalize_is_one_over_smallest_std():
    norm = Normalize([0.5, 0.2, 0.1], [0.25, 0.5, 2.0])
    report = lipschitz_bound(norm, torch.rand(2, 3, 4, 4))
    assert float(report) == pytest.approx(4.0)
    matrix = explicit_matrix(lambda z: norm(z) - norm(torch.zeros_like(z)), (3, 2, 2))
    assert float(torch.linalg.matrix_norm(matrix, ord=2)) == pytest.approx(4.0)


def test_inline_normalization_pattern():
    mean, std = torch.tensor([0.5, 0.4]).view(1, 2, 1, 1), torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)

    class Inline(nn.Module):
        def forward(self, x):
            return (x - mean) / std

    assert float(lipschitz_bound(Inline(), torch.rand(1, 2, 3, 3))) == pytest.approx(5.0)


def test_parametrized_layers_use_the_rule_of_their_class():
    layer = parametrizations.spectral_norm(nn.Linear(6, 4))
    layer.eval()
    report = lipschitz_bound(nn.Sequential(layer, nn.ReLU()), torch.rand(2, 6))
    exact = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    assert float(report) == pytest.approx(float(exact), rel=1e-9)


class Doubling(nn.Module):
    def forward(self, x):
        return torch.sort(2 * x, dim=1).values  # sort has no rule


def test_register_rule_for_a_custom_module():
    model = nn.Sequential(nn.Linear(3, 3), Doubling())
    register_rule(Doubling, lambda module, shape: NormBound(torch.tensor(2.0), "exact", "x2"))
    report = lipschitz_bound(model, torch.rand(1, 3))
    assert report.layers[-1].kind == "Doubling"
    exact = torch.linalg.matrix_norm(model[0].weight, ord=2)
    assert float(report) == pytest.approx(2 * float(exact))


def test_subclass_that_overrides_forward_does_not_inherit_the_rule():
    class Shifted(nn.Linear):
        def forward(self, x):
            return super().forward(x * 3)

    assert find_rule(nn.Linear(2, 2)) is not None
    assert find_rule(Shifted(2, 2)) is None
    report = lipschitz_bound(Shifted(2, 2), torch.rand(1, 2))  # traced into instead
    assert report.layers[0].bound == pytest.approx(3.0)


def test_module_with_own_lipschitz_bound_is_a_leaf():
    class Halver(nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=1).values / 2  # not traceable into a rule

        def lipschitz_bound(self, input_shape):
            return NormBound(torch.tensor(0.5), "exact", "own")

    report = lipschitz_bound(nn.Sequential(Halver(), nn.Flatten()), torch.rand(2, 5))
    assert float(report) == pytest.approx(0.5)
    assert report.layers[0].method == "own"


@pytest.mark.parametrize("functional", [False, True])
def test_in_place_activation_feeding_a_residual(functional):
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.LeakyReLU(3.0, inplace=True)

        def forward(self, x):
            h = self.fc(x)
            # the in-place op overwrites h first: the output is 2 act(h)
            return h + (F.leaky_relu(h, 3.0, True) if functional else self.act(h))

    model = InPlace()
    points = torch.randn(32, 4)
    upper = float(lipschitz_bound(model, points[:1]))
    assert float(jacobian_norms(model, points).max()) <= upper * (1 + 1e-12)


def test_average_pooling_with_negative_divisor_override_holds():
    # a negative divisor_override makes every entry of the pooling matrix negative; the Schur
    # test must use magnitudes (it used to return 0.67 < 0.90 here)
    pool = nn.AvgPool2d(2, stride=1, divisor_override=-3)
    shape = (1, 2, 5)
    matrix = explicit_matrix(pool, shape)
    upper = float(lipschitz_bound(pool, torch.randn(2, *shape, dtype=torch.float64)))
    assert float(torch.linalg.matrix_norm(matrix, 2)) == pytest.approx(0.8967, abs=1e-4)
    assert float(torch.linalg.matrix_norm(matrix, 2)) <= upper * (1 + 1e-12)


@pytest.mark.parametrize("threshold", [0.0, -5.0, 5.0])
def test_softplus_with_a_small_threshold_is_refused(threshold):
    # Softplus jumps by log(1 + exp(-threshold)) / beta where it switches to the identity
    class Functional(nn.Module):
        def forward(self, x):
            return F.softplus(x, 2.0, threshold)

    for model in (nn.Softplus(threshold=threshold), Functional()):
        with pytest.raises(UnsupportedLayerError, match="threshold"):
            lipschitz_bound(model, torch.randn(2, 3))
    assert float(lipschitz_bound(nn.Softplus(beta=0.5), torch.randn(2, 3,
                                                                 dtype=torch.float32))) == 1.0


@pytest.mark.parametrize("layer, shape", [
    (nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (1, 3, 4, 5)),
    (nn.ConvTranspose2d(2, 4, 4, stride=2, padding=1), (1, 2, 3, 3)),
    (nn.ConvTranspose2d(2, 3, 3, padding=1), (1, 2, 5, 5)),
    (nn.ConvTranspose1d(3, 2, 5, stride=3, padding=2), (1, 3, 6)),
], ids=["2d-stride2-output-padding", "2d-k4-stride2", "2d-stride1", "1d-stride3"])
def test_conv_transpose_bound_dominates_its_explicit_matrix(layer, shape):
    torch.manual_seed(0)
    layer = layer.double()
    size = int(torch.tensor(shape[1:]).prod())
    basis = torch.eye(size).reshape(size, *shape[1:])
    with torch.no_grad():
        matrix = (layer(basis) - layer(torch.zeros(1, *shape[1:]))).reshape(size, -1)
    truth = float(torch.linalg.svdvals(matrix)[0])
    report = lipschitz_bound(nn.Sequential(layer), torch.randn(*shape))
    assert truth * (1 - 1e-9) <= float(report) <= truth * 1.25


def test_conv_transpose_with_groups_is_refused():
    with pytest.raises(UnsupportedLayerError, match="groups=2"):
        lipschitz_bound(nn.Sequential(nn.ConvTranspose2d(2, 2, 3, groups=2)),
                        torch.randn(1, 2, 4, 4))


@pytest.mark.parametrize("pool", [nn.LPPool2d(2, 2), nn.LPPool2d(2, 3, stride=1),
                                  nn.LPPool1d(2, 3, stride=2)], ids=["2x2", "3x3-s1", "1d"])
def test_l2_norm_pooling_bound_holds_on_jacobians(pool):
    torch.manual_seed(0)
    shape = (2, 6) if isinstance(pool, nn.LPPool1d) else (2, 6, 6)
    bound = float(lipschitz_bound(nn.Sequential(pool), torch.randn(1, *shape)))
    points = torch.randn(32, *shape)
    jac = torch.func.vmap(torch.func.jacrev(lambda x: pool(x[None])[0]))(points)
    norms = torch.linalg.matrix_norm(jac.reshape(32, -1, points[0].numel()), ord=2)
    assert float(norms.max()) <= bound * (1 + 1e-9)
    if pool.kernel_size == 2:
        assert bound == 1.0


def test_lp_pooling_other_than_l2_is_refused():
    with pytest.raises(UnsupportedLayerError, match="norm_type=3"):
        lipschitz_bound(nn.Sequential(nn.LPPool2d(3, 2)), torch.randn(1, 1, 4, 4))


def test_pixel_shuffles_are_exact_isometries():
    model = nn.Sequential(nn.PixelUnshuffle(2), nn.Flatten(), nn.Linear(16, 3))
    report = lipschitz_bound(model, torch.randn(1, 1, 4, 4))
    assert report.guarantee == "exact"
    torch.testing.assert_close(report.value, torch.linalg.matrix_norm(model[2].weight, ord=2))

