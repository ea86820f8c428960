"""Network bounds against explicit Jacobians on random small networks (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bounds_oracles import explicit_matrix, jacobian_norms
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipcert.bounds import Normalize, lipschitz_bound, lipschitz_lower_bound
from lipcert.errors import UnsupportedLayerError


def _randomize_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.2)
            module.weight.data.copy_(torch.randn(n, generator=generator) * 1.5)
    return model.eval()


class ResidualConcat(nn.Module):
    """Conv, BN, ReLU, residual add, concatenation, pooling, constants and a linear head."""

    def __init__(self):
        super().__init__()
        self.norm = Normalize([0.4, 0.5], [0.3, 0.6])
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.branch = nn.Conv2d(2, 3, 1, stride=2)
        self.pool = nn.MaxPool2d(2, stride=1)
        self.head = nn.Linear(6 * 2 * 2, 4)

    def forward(self, x):
        x = self.norm(x)
        h = x + F.relu(self.bn(self.conv1(x)))
        h = torch.cat([torch.tanh(self.conv2(h)), 0.5 * self.branch(h) - 1.0], dim=1)
        h = self.pool(h)
        return self.head(F.leaky_relu(h.flatten(1), 0.2)) / 3


class Bottleneck(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return F.relu(x + self.body(x))


def _small_resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), Bottleneck(3), nn.AvgPool2d(2),
                         Bottleneck(3), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(12, 5))


NETWORKS = {
    "residual-concat": (ResidualConcat, (2, 6, 6)),
    "resnet": (_small_resnet, (1, 8, 8)),
    "mlp-gelu": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.GELU(),
                                       nn.Linear(9, 7), nn.Sigmoid(), nn.Linear(7, 3)), (3, 4)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ELU(),
                                     nn.AvgPool1d(3, stride=1, padding=1), nn.Flatten(),
                                     nn.Linear(21, 4)), (2, 7)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_upper_bound_dominates_jacobians_and_lower_bound(name):
    torch.manual_seed(0)
    factory, shape = NETWORKS[name]
    model = _randomize_batch_norms(factory(), seed=1)
    points = torch.randn(24, *shape) * 2
    report = lipschitz_bound(model, points[:1])
    upper = float(report)
    assert report.guarantee == "upper" and report.traced
    assert float(jacobian_norms(model, points).max()) <= upper * (1 + 1e-9)
    lower = lipschitz_lower_bound(model, points[:8], steps=20, seed=0)
    assert 0 < lower <= upper * (1 + 1e-9)


def test_bound_is_differentiable_in_the_weights():
    model = _randomize_batch_norms(ResidualConcat(), seed=2)
    report = lipschitz_bound(model, torch.rand(1, 2, 6, 6))
    report.value.backward()
    for parameter in (model.conv1.weight, model.bn.weight, model.head.weight):
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0


def test_single_linear_layer_is_exact():
    torch.manual_seed(1)
    layer = nn.Linear(7, 5)
    report = lipschitz_bound(nn.Sequential(nn.Flatten(), layer), torch.rand(3, 7))
    assert report.guarantee == "exact"
    exact = torch.linalg.svdvals(layer.weight.detach())[0]
    assert float(report) == pytest.approx(float(exact), rel=1e-12)
    assert lipschitz_bound(layer, torch.rand(3, 7)).guarantee == "exact"


def test_composition_is_an_upper_bound_not_exact():
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    report = lipschitz_bound(model, torch.rand(2, 6))
    assert report.guarantee == "upper"
    exact = torch.linalg.matrix_norm(model[1].weight @ model[0].weight, ord=2)
    assert float(exact) <= float(report) * (1 + 1e-12)


def test_per_node_table_and_running_products():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    report = lipschitz_bound(model, torch.rand(1, 4))
    names = [layer.name for layer in report.layers]
    assert names == ["0", "1", "2"]
    running = 1.0
    for layer in report.layers:
        running *= layer.bound
        assert layer.running == pytest.approx(running)
    text = str(report)
    assert "Linear" in text and "running" in text and "upper" in text
    assert report.to_dict()["upper_bound"] == pytest.approx(float(report))


def test_last_linear_layer_and_its_input_bound_are_reported():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))
    report = lipschitz_bound(model, torch.rand(2, 2, 4))
    assert report.last_linear is not None
    assert report.last_linear.weight is model[3].weight
    expected = torch.linalg.matrix_norm(model[1].weight, ord=2)
    assert float(report.last_linear.input_bound) == pytest.approx(float(expected))


def test_functional_linear_pad_mean_and_selection():
    weight = torch.randn(5, 2 * 3)

    class Functional(nn.Module):
        def forward(self, x):
            h = F.pad(x, (1, 1))
            h = F.avg_pool2d(h, 2, stride=1).mean(dim=(2, 3), keepdim=True)
            h = torch.stack([x[:, :, 0, :], x[:, :, 1, :]], dim=1).flatten(1)[:, :6]
            shift = torch.zeros_like(h[:, :5]) + h.size(1)  # depends on the shape only
            return F.linear(torch.relu(h), weight) + h.sum(dim=1, keepdim=True) + shift

    model = Functional()
    points = torch.randn(32, 2, 3, 3)
    upper = float(lipschitz_bound(model, points[:1]))
    assert float(jacobian_norms(model, points).max()) <= upper * (1 + 1e-9)


def test_broadcasting_and_constant_tensors():
    scale = torch.tensor([[2.0], [-3.0]])

    class Broadcast(nn.Module):
        def forward(self, x):  # x: (N, 1, 4) -> (N, 2, 4), every entry repeated twice
            return (x * scale + torch.ones(2, 4)).flatten(1) / torch.tensor(0.5)

    model = Broadcast()
    matrix = explicit_matrix(model, (1, 4)) - model(torch.zeros(1, 1, 4)).reshape(-1, 1)
    upper = float(lipschitz_bound(model, torch.rand(1, 1, 4)))
    assert float(torch.linalg.matrix_norm(matrix, ord=2)) <= upper * (1 + 1e-12)


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=5),
       activation=st.sampled_from([nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.SiLU]),
       seed=st.integers(0, 2**16))
def test_random_mlps(widths, activation, seed):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
    model = nn.Sequential(*layers[:-1])
    points = torch.randn(32, widths[0]) * 3
    report = lipschitz_bound(model, points[:1])
    assert float(jacobian_norms(model, points).max()) <= float(report) * (1 + 1e-9)
    if len(widths) == 2:
        assert report.guarantee == "exact"


@settings(max_examples=10, deadline=None)
@given(channels=st.integers(1, 3), size=st.integers(5, 7), kernel=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 1), pool=st.sampled_from(
           ["max", "avg", "avg-ceil", "none"]), residual=st.booleans(), seed=st.integers(0, 999))
def test_random_conv_nets(channels, size, kernel, stride, padding, pool, residual, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, channels, kernel, stride=stride, padding=padding)
    pools = {"max": nn.MaxPool2d(2, stride=1), "none": nn.Identity(),
             "avg": nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
             "avg-ceil": nn.AvgPool2d(2, ceil_mode=True)}
    keeps_shape = stride == 1 and kernel == 2 * padding + 1

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.pool = conv, nn.BatchNorm2d(channels), pools[pool]
            self.residual = residual and keeps_shape

        def forward(self, x):
            h = F.relu(self.bn(self.conv(x)))
            return self.pool(h + x if self.residual else h).flatten(1)

    model = _randomize_batch_norms(Net(), seed)
    points = torch.randn(16, channels, size, size)
    upper = float(lipschitz_bound(model, points[:1]))
    assert float(jacobian_norms(model, points).max()) <= upper * (1 + 1e-9)


def test_optional_forward_arguments_keep_their_defaults():
    class WithOptions(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x, scale=2.0, features=False):
            h = self.fc(x) * scale
            return h if features else torch.tanh(h)

    model = WithOptions()
    expected = 2.0 * torch.linalg.matrix_norm(model.fc.weight, ord=2)
    assert float(lipschitz_bound(model, torch.rand(2, 3))) == pytest.approx(float(expected))


def test_works_under_no_grad():
    torch.manual_seed(0)  # unseeded, some draws leave every ReLU dead at x: a lower bound of 0
    model = _small_resnet().eval()
    x = torch.rand(2, 1, 8, 8)
    expected = float(lipschitz_bound(model, x))
    with torch.no_grad():
        assert float(lipschitz_bound(model, x)) == pytest.approx(expected)
        assert 0 < lipschitz_lower_bound(model, x, steps=3) <= expected


class _SlopeOnAView(nn.Module):
    """An in-place op on a view of ``h`` changes ``h``, which the model returns."""

    def __init__(self, how: str):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4))
        self.act = nn.LeakyReLU(5.0, inplace=True)
        self.how = how

    def forward(self, x):
        h = self.fc(x)
        if self.how == "functional":
            F.leaky_relu(h.view(h.shape[0], -1), 5.0, inplace=True)
        elif self.how == "module":
            self.act(h[:, 1:])
        else:  # augmented assignment: fx would trace it as an out-of-place v * 5
            v = h[:, :2]
            v *= 5
        return h


@pytest.mark.parametrize("how", ["functional", "module", "augmented"])
def test_in_place_ops_on_views_change_the_base_tensor(how):
    model = _SlopeOnAView(how).double()
    points = torch.randn(32, 4, dtype=torch.float64)
    upper = float(lipschitz_bound(model, points[:2]))
    found = float(jacobian_norms(model, points).max())
    assert found > 4.0  # the views' slope 5 reaches the output
    assert found <= upper * (1 + 1e-12)


def test_augmented_assignment_used_twice_is_bounded():
    class Twice(nn.Module):
        def forward(self, x):
            h = x * 1.0
            v = h[:, :2]
            v *= 10  # scales h too: the output's first columns are 20 x
            return h + F.pad(v, (0, 2))

    model = Twice()
    points = torch.randn(8, 4, dtype=torch.float64)
    assert float(jacobian_norms(model, points).max()) == pytest.approx(20.0)
    assert float(lipschitz_bound(model, points[:2])) >= 20.0


def test_leaf_with_weight_norm_hook_is_bounded_after_its_forward():
    # torch's legacy weight_norm recomputes .weight in a forward pre-hook: a leaf model must
    # run before its rule reads the weight (it used to read a stale weight, 10x too small)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        layer = nn.utils.weight_norm(nn.Linear(4, 4).double())
    with torch.no_grad():
        layer.weight_g.mul_(10)
    upper = float(lipschitz_bound(layer, torch.randn(2, 4, dtype=torch.float64)))
    true = float(torch.linalg.matrix_norm(explicit_matrix(lambda x: layer(x) - layer.bias, (4,)),
                                          2))
    assert true <= upper * (1 + 1e-12)


def test_untraceable_model_that_branches_on_values_is_refused():
    # the children-in-order fallback used to accept it from the example input alone
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if float(x.abs().max()) > 5:  # untraceable, and never taken on small inputs
                return self.fc(x) * 100
            return self.fc(x)

    with pytest.raises(UnsupportedLayerError, match="children"):
        lipschitz_bound(Branching(), torch.randn(2, 4))


def test_cast_below_float32_is_refused():
    class HalfRound(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x.to(torch.bfloat16).to(x.dtype))

    with pytest.raises(UnsupportedLayerError, match="bfloat16"):
        lipschitz_bound(HalfRound(), torch.randn(2, 4))


def test_in_place_write_into_a_constant_is_refused():
    class WriteIntoZeros(nn.Module):
        def forward(self, x):
            c = torch.zeros_like(x)
            v = c[:, :2]
            v += x[:, :2] * 10  # c is no longer a constant: c = 10 x on two columns
            return c + x  # used to be bounded by 1; the true constant is 11

    model = WriteIntoZeros()
    points = torch.randn(4, 4, dtype=torch.float64)
    assert float(jacobian_norms(model, points).max()) == pytest.approx(11.0)
    with pytest.raises(UnsupportedLayerError, match="did not depend on the input"):
        lipschitz_bound(model, points[:2])


def test_out_argument_is_refused():
    class Out(nn.Module):
        def forward(self, x):
            c = torch.zeros_like(x)
            torch.mul(x, 10.0, out=c)
            return c + x

    with pytest.raises(UnsupportedLayerError, match="out="):
        lipschitz_bound(Out(), torch.randn(2, 4))
