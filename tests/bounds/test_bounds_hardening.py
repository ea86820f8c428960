"""Regression tests of issue #13 items 5-12 and 14: each hole an adversarial review found in
network bounds, with an independent oracle (explicit matrices, Jacobians at random points,
the lower-bound search) showing what the true constant is. Either the bound is refused or it
is never below the oracle. Runs in float64 (tests/conftest.py) unless a test says otherwise.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from bounds_oracles import explicit_matrix, jacobian_norms
from torch import nn
from torch.nn.modules import module as module_py
from torch.nn.utils import parametrizations, prune

from lipcert import layers, models
from lipcert.bounds import Normalize, lipschitz_bound, lipschitz_lower_bound
from lipcert.errors import BadInputError, LipcertError, UnsupportedLayerError
from lipcert.linalg import NormBound


def _linear(seed: int = 0, n: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n, n)


def _spectral(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix, ord=2))


def _exact_norm(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Norm of a piecewise-affine-free (affine) model from its explicit matrix."""
    with torch.no_grad():
        return _spectral(explicit_matrix(lambda z: model(z) - model(torch.zeros_like(z)), shape))


def _assert_sound(model: nn.Module, shape: tuple[int, ...], points: int = 64) -> float:
    """The bound is never below the Jacobian norm at random points; returns the bound."""
    bound = float(lipschitz_bound(model, torch.randn(2, *shape)))
    x = torch.randn(points, *shape)
    observed = float(jacobian_norms(model, x).max())
    assert observed <= bound * (1 + 1e-9), (observed, bound)
    return bound


# ---- item 5: hooks and replaced forwards ----------------------------------------------


class _Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(_linear(), nn.ReLU())
        self.head = _linear(1)

    def forward(self, x):
        return self.head(self.inner(x))


def _times_ten(module, inputs, output):
    return output * 10


def _pre_times_ten(module, inputs):
    return (inputs[0] * 10,)


class WeightNorm:  # a look-alike of torch's hook class, by name only
    def __call__(self, module, inputs):
        return (inputs[0] * 10,)


def _hook_on_model(m):
    m.register_forward_hook(_times_ten)


def _pre_hook_on_container(m):
    m.inner.register_forward_pre_hook(_pre_times_ten)


def _hook_on_leaf(m):
    m.head.register_forward_hook(_times_ten)


def _spoofed_weight_norm(m):
    m.head.register_forward_pre_hook(WeightNorm())


def _instance_forward(m):
    original = m.head.forward
    m.head.forward = lambda x: original(x) * 10


def _instance_forward_on_model(m):
    original = m.forward
    m.forward = lambda x: original(x) * 10


def _hook_on_parametrization(m):
    parametrizations.spectral_norm(m.head)
    m.head.parametrizations.weight[0].register_forward_hook(_times_ten)


HOLES = [_hook_on_model, _pre_hook_on_container, _hook_on_leaf, _spoofed_weight_norm,
         _instance_forward, _instance_forward_on_model, _hook_on_parametrization]


@pytest.mark.parametrize("install", HOLES, ids=lambda f: f.__name__)
def test_hooks_and_replaced_forwards_are_refused(install):
    model = _Chain().eval()
    plain = float(lipschitz_bound(model, torch.randn(2, 4)))
    install(model)
    # the oracle: what the model now computes is far steeper than the plain bound
    x = torch.randn(64, 4)
    with torch.no_grad():
        gains = lipschitz_lower_bound(model, x, steps=20)
    assert float(gains) > 2 * plain
    with pytest.raises(UnsupportedLayerError, match="hook|forward"):
        lipschitz_bound(model, torch.randn(2, 4))


@pytest.mark.parametrize("register", [module_py.register_module_forward_hook,
                                      module_py.register_module_forward_pre_hook])
def test_global_module_hooks_are_refused(register):
    model = _Chain().eval()
    handle = register(_times_ten if "pre" not in register.__name__ else _pre_times_ten)
    try:
        assert float(lipschitz_lower_bound(model, torch.randn(16, 4), steps=10)) > \
            2 * float(model.head.weight.detach().norm())
        with pytest.raises(UnsupportedLayerError, match="global"):
            lipschitz_bound(model, torch.randn(2, 4))
    finally:
        handle.remove()
    lipschitz_bound(model, torch.randn(2, 4))  # and fine again once removed


def test_subclass_overriding_call_does_not_inherit_the_rule():
    class Louder(nn.Linear):
        def __call__(self, x):
            return super().__call__(x) * 10

    torch.manual_seed(0)
    model = nn.Sequential(Louder(4, 4))
    with pytest.raises(UnsupportedLayerError):
        lipschitz_bound(model, torch.randn(2, 4))


@pytest.mark.parametrize("wrap", [
    lambda m: nn.utils.weight_norm(m),
    lambda m: nn.utils.spectral_norm(m),
    lambda m: prune.l1_unstructured(m, "weight", amount=0.5),
], ids=["weight_norm", "spectral_norm", "prune"])
def test_torch_reparametrization_hooks_are_accepted_and_sound(wrap):
    layer = wrap(_linear())
    model = nn.Sequential(layer, nn.Tanh(), _linear(2)).eval()
    _assert_sound(model, (4,))


# ---- item 6: LPPool ceil_mode ------------------------------------------------------------


@pytest.mark.parametrize("pool, shape", [
    (nn.LPPool1d(2, 2, ceil_mode=True), (1, 5)),
    (nn.LPPool1d(2, 3, stride=2, ceil_mode=True), (2, 6)),
    (nn.LPPool1d(2, 3, stride=1), (1, 6)),
    (nn.LPPool2d(2, 2, ceil_mode=True), (1, 5, 5)),
    (nn.LPPool2d(2, 3, ceil_mode=True), (1, 4, 4)),
    (nn.LPPool2d(2, (3, 2), stride=(2, 1), ceil_mode=True), (1, 6, 5)),
])
def test_lp_pool_partial_windows_are_rescaled(pool, shape):
    bound = _assert_sound(pool, shape, points=256)
    # partial corner windows hold m of k positions and scale by sqrt(k / m): the corner
    # entry alone in the last window of a 2x2 (3x3) kernel reaches 2 (3)
    if pool.ceil_mode and isinstance(pool, nn.LPPool2d) and pool.kernel_size in (2, 3):
        assert bound >= pool.kernel_size
        corner = torch.zeros(1, *shape)
        corner[..., -1, -1] = 1.0
        with torch.no_grad():
            assert float(pool(corner).norm()) == pytest.approx(pool.kernel_size)


# ---- item 7 (and siblings): broadcasting elementwise ops -----------------------------------


class ClampBroadcast(nn.Module):
    def forward(self, x):
        return torch.clamp(x, min=-torch.ones(1, 100) * 5, max=torch.ones(1, 100) * 5)


class HardtanhOfExpand(nn.Module):
    def forward(self, x):
        return F.hardtanh(x.expand(-1, 9)) + x.repeat(1, 9)


def test_clamp_with_broadcasting_tensor_bounds():
    bound = _assert_sound(ClampBroadcast(), (1,))
    assert bound == pytest.approx(10.0)
    assert float(jacobian_norms(ClampBroadcast(), torch.zeros(1, 1))) == pytest.approx(10.0)


def test_expand_and_repeat_count_the_repetitions():
    assert _assert_sound(HardtanhOfExpand(), (1,)) == pytest.approx(6.0)


@pytest.mark.parametrize("fn", [
    lambda x: torch.maximum(x, torch.zeros(1, 10)),
    lambda x: torch.where(x > 0, x, 2 * x),
    lambda x: torch.addcmul(torch.zeros(1, 10), x, torch.ones(1, 10)),
], ids=["maximum", "where", "addcmul"])
def test_other_broadcasting_ops_are_refused(fn):
    class Op(nn.Module):
        def forward(self, x):
            return fn(x)

    with pytest.raises(UnsupportedLayerError):
        lipschitz_bound(Op(), torch.randn(2, 1))


# ---- item 8: Normalize broadcasting -------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_normalize_broadcasting_one_channel(channels):
    norm = Normalize([0.1, 0.2, 0.3], [0.25, 0.5, 1.0])
    shape = (channels, 2, 2)
    bound = float(lipschitz_bound(norm, torch.randn(2, *shape)))
    assert bound == pytest.approx(_exact_norm(norm, shape))


def test_normalize_with_a_mismatched_channel_count_is_refused():
    with pytest.raises(BadInputError, match="channels"):
        Normalize([0.1, 0.2], [0.3, 0.4]).lipschitz_bound(torch.Size((2, 3, 2, 2)))


# ---- item 9: in-place ops on views reached through tuples ---------------------------------


def _view_then_scale(view):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear(0, 6)

        def forward(self, x):
            h = self.lin(x)
            piece = view(h)
            piece *= 10
            return h

    return Model().eval()


VIEWS = {
    "split": lambda h: torch.split(h, 2, 1)[0],
    "chunk-then-index": lambda h: h.chunk(3, 1)[1],
    "unbind": lambda h: h.unbind(1)[2],
    "tensor_split": lambda h: h.tensor_split(2, 1)[0],
    "narrow": lambda h: h.narrow(1, 1, 2),
    "select": lambda h: h.select(1, 4),
    "unflatten": lambda h: h.unflatten(1, (2, 3))[:, 0],
    "transpose-of-split": lambda h: h.split(3, 1)[1].unsqueeze(2).transpose(1, 2),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_in_place_write_through_a_view_is_followed(view):
    model = _view_then_scale(VIEWS[view])
    with torch.no_grad():
        bound = float(lipschitz_bound(model, torch.randn(2, 6)))
        exact = _exact_norm(model, (6,))
    assert exact > 2 * _spectral(model.lin.weight.detach())  # the write matters
    assert exact <= bound * (1 + 1e-9)


def test_pieces_read_again_after_an_in_place_write():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear(0, 4)

        def forward(self, x):
            parts = self.lin(x).chunk(2, 1)
            first = parts[0]
            first += parts[0]
            first *= 10
            return torch.cat([parts[0], parts[1]], 1)

    model = Model().eval()
    with torch.no_grad():
        assert _exact_norm(model, (4,)) <= float(lipschitz_bound(model, torch.randn(2, 4)))


# ---- item 10: the untraceable-model fallback ----------------------------------------------


class BranchesOnBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _linear()
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.lin(x))
        if len(x) > 32:  # len() is not traceable: the fallback runs
            h = h * 10
        return h


class BranchesOnCallerBatch(BranchesOnBatch):
    def forward(self, x):
        h = self.act(self.lin(x))
        return h * 10 if len(x) == 7 else h


class Untraceable(BranchesOnBatch):
    def forward(self, x):
        if len(x) >= 1:
            return self.act(self.lin(x))
        return x


@pytest.mark.parametrize("model_type, batch", [(BranchesOnBatch, 2), (BranchesOnCallerBatch, 7)])
def test_fallback_checks_several_batch_sizes_including_the_callers(model_type, batch):
    model = model_type().eval()
    x = torch.randn(batch, 4)
    if batch == 7:
        assert float(lipschitz_lower_bound(model, x, steps=10)) > 5  # the caller's batch
    else:
        assert float(lipschitz_lower_bound(model, torch.randn(64, 4), steps=10)) > 5
    with pytest.raises(UnsupportedLayerError, match="does not reproduce"):
        lipschitz_bound(model, x)


def test_fallback_report_says_what_it_cannot_exclude():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = lipschitz_bound(Untraceable().eval(), torch.randn(5, 4))
    assert not report.traced
    (caveat,) = report.caveats
    assert "5" in caveat and "not excluded" in caveat
    assert report.to_dict()["caveats"] == [caveat]
    assert "caveat" in str(report)
    assert lipschitz_bound(_Chain(), torch.randn(2, 4)).caveats == ()


# ---- item 11: precision below float32 -----------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda x: x.sum(1, dtype=torch.float16),
    lambda x: x.mean(1, dtype=torch.bfloat16),
    lambda x: torch.sum(x, dim=1, dtype=torch.float16).float(),
    lambda x: x.to(torch.bfloat16).double(),
    lambda x: x.half(),
], ids=["sum-f16", "mean-bf16", "torch.sum-f16", "to-bf16", "half"])
def test_ops_computing_below_float32_are_refused(fn):
    class Op(nn.Module):
        def forward(self, x):
            return fn(x)

    x = torch.randn(2, 8)
    # the oracle: half-precision rounding changes outputs far beyond the slope of the op
    step = torch.full((1, 8), 2.0 ** -14)
    base = torch.full((1, 8), 1000.0)
    with torch.no_grad():
        ratio = (Op()(base + step) - Op()(base)).double().norm() / step.norm()
    assert float(ratio) == 0 or float(ratio) > 3  # steps, not a slope of sqrt(8) or less
    with pytest.raises(UnsupportedLayerError, match="float32"):
        lipschitz_bound(Op(), x)


def test_autocast_inside_forward_is_refused():
    class Autocast(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.lin(x)

    with pytest.raises(LipcertError):
        lipschitz_bound(Autocast().float(), torch.randn(2, 4, dtype=torch.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_raise_a_lipcert_error(dtype):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).to(dtype)
    with pytest.raises(UnsupportedLayerError, match="float32"):
        lipschitz_bound(model, torch.randn(2, 4).to(dtype))
    with pytest.raises(UnsupportedLayerError, match="float32"):
        lipschitz_bound(nn.ReLU(), torch.randn(2, 4).to(dtype))


# ---- item 12: Softplus threshold jump -----------------------------------------------------


def test_softplus_jump_is_refused_where_the_dtype_resolves_it():
    threshold = 20.0
    below = torch.tensor([threshold - 1e-12], dtype=torch.float64)
    above = torch.tensor([threshold + 1e-12], dtype=torch.float64)
    jump = float(F.softplus(below) - F.softplus(above))
    assert jump > 1e-9  # the oracle: a discontinuity of 2e-9 in float64
    for model in (nn.Softplus(), nn.Sequential(nn.Linear(3, 3), nn.Softplus())):
        with pytest.raises(UnsupportedLayerError, match="jump"):
            lipschitz_bound(model.double(), torch.randn(2, 3, dtype=torch.float64))
    # in float32 the jump is below half an ulp of the output: rounding hides it
    below32, above32 = below.float(), above.float()
    assert float(F.softplus(below32) - F.softplus(above32)) == 0.0
    assert float(lipschitz_bound(nn.Softplus().float(), torch.randn(2, 3).float())) == 1.0


# ---- item 14: raw exceptions and precedence -----------------------------------------------


def test_functional_linear_with_keywords_as_the_output():
    class KeywordLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return F.linear(input=x, weight=self.weight)

    model = KeywordLinear()
    bound = float(lipschitz_bound(model, torch.randn(2, 4)))
    assert bound == pytest.approx(_spectral(model.weight.detach()))


@pytest.mark.parametrize("join", [
    lambda x: torch.cat(x.chunk(2, 1), 1),
    lambda x: torch.stack(x.split(2, 1), 1),
    lambda x: torch.stack(x.unbind(1), 1),
], ids=["cat-chunk", "stack-split", "stack-unbind"])
def test_joining_a_tuple_node(join):
    class Join(nn.Module):
        def forward(self, x):
            return join(x)

    assert 1.0 <= float(lipschitz_bound(Join(), torch.randn(2, 4))) <= 2.0 + 1e-12


def test_conv_transpose_with_output_size():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.up = nn.ConvTranspose2d(2, 1, 3, stride=2)

        def forward(self, x):
            return self.up(x, output_size=[10, 10])

    model = Up()
    bound = float(lipschitz_bound(model, torch.randn(2, 2, 4, 4)))
    assert model(torch.randn(1, 2, 4, 4)).shape[-1] == 10
    assert _exact_norm(model, (2, 4, 4)) <= bound * (1 + 1e-9)


def test_module_called_with_extra_arguments_is_refused():
    class WithArgument(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Scaler()

        def forward(self, x):
            return self.inner(x, 10.0)

    with pytest.raises(UnsupportedLayerError, match="arguments besides"):
        lipschitz_bound(WithArgument(), torch.randn(2, 4))


class Scaler(nn.Module):
    def forward(self, x, scale=1.0):
        return x * scale

    def lipschitz_bound(self, input_shape):
        return NormBound(torch.tensor(1.0, dtype=torch.float64), "exact", "plain call")


def test_a_two_element_bound_is_a_lipcert_error():
    class Two(nn.Module):
        def forward(self, x):
            return x

        def lipschitz_bound(self, input_shape):
            return NormBound(torch.tensor([1.0, 2.0]), "upper", "two")

    with pytest.raises(BadInputError, match="0-dim"):
        lipschitz_bound(nn.Sequential(nn.Linear(4, 4), Two()), torch.randn(2, 4))


@pytest.mark.parametrize("kwargs", [{"groups": 2}, {"dilation": 2, "padding": 2},
                                    {"groups": 4, "dilation": 2, "padding": 1}])
def test_own_lipschitz_bound_wins_over_base_class_rule(kwargs):
    torch.manual_seed(0)
    layer = layers.AOLConv2d(4, 4, 3, **{"padding": 1, **kwargs})
    model = nn.Sequential(nn.Identity(), layer, nn.ReLU()).eval()
    shape = (4, 6, 6)
    bound = float(lipschitz_bound(model, torch.randn(2, *shape)))
    assert bound == pytest.approx(float(layer.lipschitz_bound(torch.Size((2, *shape)))))
    assert _exact_norm(layer, shape) <= bound * (1 + 1e-9)
    # the plain nn.Conv2d export (same groups / dilation) has its own rule now
    exported = layers.to_vanilla(model, (2, *shape))
    assert type(exported[1]) is nn.Conv2d
    assert float(lipschitz_bound(exported, torch.randn(2, *shape))) == pytest.approx(bound)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (4, 7, 6)),
    (nn.Conv1d(4, 4, 3, groups=4, dilation=3, padding=1, stride=2), (4, 9)),
    (nn.Conv2d(2, 2, 3, padding=2, dilation=2, padding_mode="circular"), (2, 6, 6)),
])
def test_grouped_and_dilated_convolutions_against_their_matrix(conv, shape):
    torch.manual_seed(0)
    conv = conv.double()
    bound = float(lipschitz_bound(conv, torch.randn(2, *shape)))
    exact = _exact_norm(conv, shape)
    assert exact <= bound * (1 + 1e-9)
    assert bound <= exact * 1.5


@pytest.mark.parametrize("layer, shape", [
    (lambda: layers.GroupSort(2), (6,)),
    (lambda: layers.MaxMin(), (6,)),
    (lambda: layers.ZeroChannelPad(6), (4, 3, 3)),
    (lambda: layers.FirstChannels(2), (4, 3, 3)),
    (lambda: layers.AOLConv2d(4, 4, 3, padding=1, groups=2), (4, 5, 5)),
])
def test_vanilla_exports_bound_like_the_original(layer, shape):
    torch.manual_seed(0)
    first = layer().eval()
    width = first(torch.randn(1, *shape)).numel()
    model = nn.Sequential(first, nn.Flatten(), nn.Linear(width, 3)).eval()
    x = torch.randn(2, *shape)
    original = float(lipschitz_bound(model, x))
    exported = layers.to_vanilla(model, x.shape)
    assert float(lipschitz_bound(exported, x)) == pytest.approx(original)
    assert float(jacobian_norms(exported, torch.randn(32, *shape)).max()) <= original * (1 + 1e-9)


@pytest.mark.parametrize("recipe", ["aol-s", "spectral-s"])
def test_exported_recipes_bound_to_the_same_value(recipe):
    torch.manual_seed(0)
    model = models.build(recipe, width=4, depth=1, dense_width=16, dense_depth=1,
                         image_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    original = float(lipschitz_bound(model, x))
    assert float(lipschitz_bound(layers.to_vanilla(model, x.shape), x)) == \
        pytest.approx(original, rel=1e-6)


# ---- siblings: view / reshape ops that would move the batch dimension ---------------------


@pytest.mark.parametrize("fn", [
    lambda x: x.movedim(0, 1),
    lambda x: torch.moveaxis(x, 1, 0),
    lambda x: x.swapaxes(0, 1),
    lambda x: x.unflatten(0, (1, -1)),
    lambda x: x.unbind(0)[0],
    lambda x: x.narrow(0, 0, 1),
    lambda x: torch.sort(x, dim=0).values,
])
def test_ops_on_the_batch_dimension_are_refused(fn):
    class Op(nn.Module):
        def forward(self, x):
            return fn(x)

    with pytest.raises(UnsupportedLayerError):
        lipschitz_bound(Op(), torch.randn(2, 4, 3))


def test_sort_values_and_movedim_are_sound():
    class Sorted(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear(3, 6)

        def forward(self, x):
            h = self.lin(x).unflatten(1, (3, 2)).movedim(2, 1)
            return torch.sort(h, dim=2, descending=True).values.flatten(1)

    bound = _assert_sound(Sorted(), (6,), points=128)
    assert bound == pytest.approx(_spectral(Sorted().lin.weight.detach()))


# ---- sibling: outputs that mix samples only at other batch sizes ----------------------------


@pytest.mark.parametrize("fn", [
    lambda x: x.expand(2, -1, -1).flatten(1),  # a new leading dim that matches the probe
    lambda x: x.reshape(2, -1)[:, -4:] * 1.0,  # a hard-coded batch size
], ids=["expand-new-leading-dim", "hard-coded-batch"])
def test_models_mixing_samples_are_refused(fn):
    class Mix(nn.Module):
        def forward(self, x):
            return fn(x)

    x = torch.randn(4, 4)
    moved = x.clone()
    moved[1] += 1.0
    with torch.no_grad():  # the oracle: sample 0's output moves when only sample 1 moves
        assert float((Mix()(x)[0] - Mix()(moved)[0]).norm()) > 0
    with pytest.raises(UnsupportedLayerError, match="each sample"):
        lipschitz_bound(Mix(), torch.randn(8, 4))


def test_a_class_forward_patched_after_its_rule_was_registered_is_refused(monkeypatch):
    original = nn.Linear.forward
    model = nn.Sequential(_linear())
    plain = float(lipschitz_bound(model, torch.randn(2, 4)))
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: original(self, x) * 10)
    assert float(lipschitz_lower_bound(model, torch.randn(16, 4), steps=10)) > 2 * plain
    with pytest.raises(UnsupportedLayerError):
        lipschitz_bound(model, torch.randn(2, 4))
