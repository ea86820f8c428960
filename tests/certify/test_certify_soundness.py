"""Regression tests for issue 13, items 1-4: certificates that an adversarial review beat.

Oracles: the exact distance of a linear classifier to its decision boundary (closed form in
float64), the model itself evaluated in its own dtype at points inside the radius along the
worst direction, and PGD.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipcert.attacks import pgd
from lipcert.bounds import LastLinear, LipschitzReport, lipschitz_bound, register_rule
from lipcert.certify import lipschitz_radii, margin_radii
from lipcert.errors import BadInputError, LipcertError, UnsoundRequestError
from lipcert.linalg import NormBound


def _linear_case(dtype, bias, margins, features=16, classes=4, seed=0):
    """A linear classifier with bias ``bias`` and points whose top-two margin (in float64
    arithmetic on the model's weights) is each value of ``margins``."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(features, classes).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, features, generator=generator))
        model.bias.fill_(bias)
    w, b = model.weight.double(), model.bias.double()
    points = []
    for target in margins:
        x = torch.randn(features, generator=generator, dtype=torch.float64)
        z = w @ x + b
        c, j = z.topk(2).indices.tolist()
        step = w[c] - w[j]
        x = x + (target - (z[c] - z[j])) * step / step.square().sum()
        points.append(x)
    x = torch.stack(points).to(dtype)
    return model, x


def _exact_distances(model, x, classes):
    """Distance (float64, exact up to float64 rounding) from x to the boundary of class c of
    the real-arithmetic linear map with the model's weights."""
    w, b = model.weight.double(), model.bias.double()
    z = x.double() @ w.T + b
    out = []
    for i, c in enumerate(classes.tolist()):
        d = [(z[i, c] - z[i, j]) / (w[c] - w[j]).norm() for j in range(len(w)) if j != c]
        out.append(min(d))
    return torch.stack(out)


def _flips_along_worst_directions(model, x, radii, steps=400):
    """Number of certified points that the model, in its own dtype, classifies differently
    at some point strictly inside the radius on the segment towards each other class's
    boundary (the worst direction for a linear model)."""
    w = model.weight.double()
    with torch.no_grad():
        classes = model(x).argmax(1)
    scales = torch.linspace(0.5, 1.0, steps, dtype=torch.float64)
    scales = torch.cat([scales[:-1], torch.tensor([1 - 1e-6, 1 - 1e-9, 1 - 1e-12])])
    flipped = 0
    for i in torch.nonzero(radii > 0).flatten().tolist():
        c, r = int(classes[i]), float(radii[i])
        broken = False
        for j in range(len(w)):
            if j == c:
                continue
            v = (w[j] - w[c]) / (w[j] - w[c]).norm()
            candidates = (x[i].double() + scales[:, None] * r * v).to(x.dtype)
            inside = (candidates.double() - x[i].double()).norm(dim=1) < r
            with torch.no_grad():
                predicted = model(candidates[inside]).argmax(1)
            broken |= bool((predicted != c).any())
        flipped += broken
    return flipped


@pytest.mark.parametrize(("dtype", "bias", "margin"), [
    (torch.float32, 10.0, 1e-4),     # logits near 10, margin 1e-4 (51/100 flipped before)
    (torch.float32, 1e6, 0.2),       # bias near 1e6 (100/100 flipped before)
    (torch.float64, 1e3, 1e-3),      # float64, bias 1e3, margin 1e-3 (182/200 before)
], ids=["f32-logits-10", "f32-bias-1e6", "f64-bias-1e3"])
def test_rounding_of_the_logits_never_flips_a_certified_point(dtype, bias, margin):
    # Half the points sit at the fragile margin, half far enough for a positive radius.
    margins = [margin] * 40 + [margin * 10 ** k for k in (1, 2, 3, 4)] * 10
    model, x = _linear_case(dtype, bias, margins)
    report = lipschitz_bound(model, x[:1])
    radii = lipschitz_radii(model, x, bound=report)
    with torch.no_grad():
        classes = model(x).argmax(1)
    assert int((radii > 0).sum()) >= 20  # the certificate is not vacuous
    exact = _exact_distances(model, x, classes)
    assert bool((radii <= exact).all())
    assert _flips_along_worst_directions(model, x, radii) == 0


def test_ties_get_radius_zero_and_the_lower_index_wins():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.0]])  # z = (2, 2, 0): class 0 and 1 tie, argmax is 0
    assert int(model(x).argmax(1)) == 0
    assert float(lipschitz_radii(model, x)) == 0.0
    assert float(lipschitz_radii(model, x, torch.tensor([1]))) == 0.0


def test_float64_reference_leaves_a_smaller_allowance_than_the_model_itself():
    model, x = _linear_case(torch.float32, 10.0, [1e-3] * 20 + [1.0] * 20)
    by_float64 = lipschitz_radii(model, x)
    by_model = lipschitz_radii(model, x, reference="model")
    assert bool((by_float64 >= by_model).all()) and bool((by_float64 > by_model).any())
    assert _flips_along_worst_directions(model, x, by_model) == 0
    with pytest.raises(BadInputError):
        lipschitz_radii(model, x, reference="float16")


class _ScaledAfterLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        out = self.fc(self.body(x))
        view = out.view(out.shape[0], -1)
        view *= 10
        return out


class _InPlaceReluAfterLinear(_ScaledAfterLinear):
    def forward(self, x):
        out = self.fc(self.body(x))
        F.relu(out, inplace=True)
        return out


class _ModuleReluAfterLinear(_ScaledAfterLinear):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.fc(self.body(x))
        self.act(out)
        return out


@pytest.mark.parametrize("factory", [_ScaledAfterLinear, _InPlaceReluAfterLinear,
                                     _ModuleReluAfterLinear],
                         ids=["mul_", "relu_", "ReLU(inplace)"])
def test_pairwise_form_needs_the_logits_to_be_the_last_linear_output(factory):
    torch.manual_seed(4)
    model = factory().eval()
    x = torch.randn(128, 6)
    report = lipschitz_bound(model, x[:1])
    assert report.last_linear is None
    with torch.no_grad():
        y = model(x).argmax(1)
    radii = lipschitz_radii(model, x, y, bound=report)
    keep = radii > 0
    assert int(keep.sum()) > 10
    adversarial = pgd(model, x[keep], y[keep], radii[keep] * (1 - 1e-9), steps=100,
                      restarts=2, seed=0, clip=None)
    with torch.no_grad():
        assert bool((model(adversarial).argmax(1) == y[keep]).all())


def test_pairwise_radius_after_scaling_is_below_the_exact_distance():
    # z = 10 (W h + b) with h = x: the exact distance is margin / (10 ||w_c - w_j||).
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            out = self.fc(x)
            view = out.view(out.shape[0], -1)
            view *= 10
            return out

    torch.manual_seed(5)
    model = Scaled()
    x = torch.randn(64, 5)
    with torch.no_grad():
        z = model(x).double()
    w = model.fc.weight.double() * 10
    c = z.argmax(1)
    exact = torch.stack([min((z[i, c[i]] - z[i, j]) / (w[c[i]] - w[j]).norm()
                             for j in range(3) if j != c[i]) for i in range(len(x))])
    radii = lipschitz_radii(model, x)
    assert bool((radii > 0).any())
    assert bool((radii <= exact).all())


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_a_report_holds_only_for_the_input_shape_it_was_computed_for():
    torch.manual_seed(6)
    model = _Conv()
    small = lipschitz_bound(model, torch.rand(1, 1, 4, 4))
    assert small.input_shape == (1, 4, 4)
    assert small.to_dict()["input_shape"] == [1, 4, 4]
    big = torch.rand(8, 1, 16, 16)
    with pytest.raises(BadInputError, match="shape"):
        lipschitz_radii(model, big, bound=small)
    with torch.no_grad():
        logits = model(big)
    with pytest.raises(BadInputError, match="shape"):
        margin_radii(logits, small, input_shape=big.shape[1:])
    # The right report works, and a hand-built one without a shape is refused.
    assert lipschitz_radii(model, big, bound=lipschitz_bound(model, big[:1])).shape == (8,)
    unknown = LipschitzReport(small.value, small.guarantee)
    with pytest.raises(BadInputError, match="input shape"):
        lipschitz_radii(model, big, bound=unknown)


def _one_line(error: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(error.value)


class _Negative(nn.Module):
    def forward(self, x):
        return -x


def test_a_rule_returning_a_negative_value_is_refused():
    register_rule(_Negative, lambda module, shape: NormBound(torch.tensor(-3.0), "upper",
                                                              "broken"))
    model = nn.Sequential(nn.Linear(3, 3), _Negative(), nn.Linear(3, 3))
    with pytest.raises(LipcertError) as error:
        lipschitz_bound(model, torch.randn(2, 3))
    _one_line(error)


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf])
def test_hand_built_reports_with_impossible_values_are_refused(value):
    with pytest.raises(BadInputError) as error:
        LipschitzReport(torch.tensor(value, dtype=torch.float64), "upper", input_shape=(3,))
    _one_line(error)
    # A report changed after construction is checked again when it is used.
    report = LipschitzReport(torch.tensor(1.0, dtype=torch.float64), "upper", input_shape=(3,))
    report.value = torch.tensor(value, dtype=torch.float64)
    with pytest.raises(BadInputError) as error:
        margin_radii(torch.randn(4, 3), report)
    _one_line(error)
    with pytest.raises(BadInputError):
        lipschitz_radii(nn.Linear(3, 3), torch.randn(4, 3), bound=report)


def test_an_estimate_report_is_refused():
    with pytest.raises(UnsoundRequestError) as error:
        LipschitzReport(torch.tensor(1.0, dtype=torch.float64), "estimate", input_shape=(3,))
    _one_line(error)
    report = LipschitzReport(torch.tensor(1.0, dtype=torch.float64), "upper", input_shape=(3,))
    report.guarantee = "estimate"
    with pytest.raises(UnsoundRequestError):
        margin_radii(torch.randn(4, 3), report)


def test_bad_last_linear_in_a_report_is_refused():
    good = LastLinear("fc", torch.randn(3, 4), torch.tensor(1.0))
    report = LipschitzReport(torch.tensor(2.0, dtype=torch.float64), "upper", last_linear=good,
                             input_shape=(4,))
    with pytest.raises(BadInputError, match="rows"):
        margin_radii(torch.randn(5, 7), report)  # 7 classes, 3 rows
    with pytest.raises(BadInputError):
        LipschitzReport(torch.tensor(2.0, dtype=torch.float64), "upper",
                        last_linear=LastLinear("fc", torch.randn(3, 4),
                                               torch.tensor(math.nan)))


def test_labels_must_be_whole_numbers_of_the_right_shape():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(BadInputError, match="fractional") as error:
        margin_radii(logits, 1.0, torch.tensor([0.7, 1.0]))
    _one_line(error)
    with pytest.raises(BadInputError):
        margin_radii(logits, 1.0, torch.tensor([True, False]))
    with pytest.raises(BadInputError):
        margin_radii(logits, 1.0, torch.tensor([[0], [1]]))
    with pytest.raises(BadInputError):
        margin_radii(logits, 1.0, [0, 1])
    with pytest.raises(BadInputError):
        margin_radii(logits, 1.0, torch.tensor([0.0, math.nan]))
    whole = margin_radii(logits, 1.0, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(whole, margin_radii(logits, 1.0, torch.tensor([0, 1])))
    assert bool((whole > 0).all())


def test_siblings_empty_batches_bad_bounds_dtypes_and_modes():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 3)).float()
    report = lipschitz_bound(model.eval(), torch.randn(2, 3).float())
    with pytest.raises(BadInputError):
        margin_radii(torch.empty(0, 3), report)
    with pytest.raises(BadInputError):
        lipschitz_radii(model, torch.empty(0, 3).float(), bound=report)
    with pytest.raises(BadInputError):
        margin_radii(torch.tensor([[1, 0], [0, 1]]), 1.0)  # integer logits
    for bound in (torch.tensor([1.0, 2.0]), True, "1.0", -0.5, math.nan):
        with pytest.raises(BadInputError):
            margin_radii(torch.randn(2, 3), bound)
    with pytest.raises(BadInputError, match="float64"):
        lipschitz_radii(model.eval(), torch.randn(2, 3, dtype=torch.float64), bound=report)
    model.train()
    with pytest.raises(LipcertError, match="eval"):
        lipschitz_radii(model, torch.randn(2, 3).float(), bound=report)


class _TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x), x


def test_models_whose_output_is_not_a_batch_of_logits():
    report = LipschitzReport(torch.tensor(1.0, dtype=torch.float64), "upper", input_shape=(3,))
    with pytest.raises(LipcertError):
        lipschitz_radii(_TupleOut(), torch.randn(4, 3), bound=report)
    extra = nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (3, 2)))
    with pytest.raises(BadInputError):
        lipschitz_radii(extra, torch.randn(4, 3), bound=report)


def test_registered_rule_bounds_with_hand_values_still_certify():
    # A number the caller vouches for is accepted for the global form.
    model, x = _linear_case(torch.float32, 0.0, [1.0] * 8)
    sigma = float(torch.linalg.matrix_norm(model.weight.double(), 2))
    radii = lipschitz_radii(model, x, bound=sigma, last_layer="global")
    with torch.no_grad():
        exact = _exact_distances(model, x, model(x).argmax(1))
    assert bool((radii > 0).all()) and bool((radii <= exact).all())


def test_certified_accuracy_refuses_nan_eps_and_negative_radii():
    from lipcert.certify import certified_accuracy

    radii = torch.tensor([0.0, 0.5, math.inf])
    assert certified_accuracy(radii, [0.1]) == {0.1: 2 / 3}
    with pytest.raises(BadInputError):
        certified_accuracy(radii, [math.nan])
    with pytest.raises(BadInputError):
        certified_accuracy(torch.tensor([0.5, -1.0]), [0.1])
    with pytest.raises(BadInputError):
        certified_accuracy(torch.tensor([0.5, math.nan]), [0.1])


class _Untraceable(nn.Module):
    """fx cannot trace the float() of a proxy; the output is the last Linear's times 1 + 1e-6,
    which the fallback's numerical chain check (rtol 1e-4) cannot tell apart."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        out = self.fc2(self.act(self.fc1(x)))
        if float(out.abs().max()) >= 0:
            out = out * (1 + 1e-6)
        return out


def test_untraced_fallback_never_uses_the_pairwise_form():
    with pytest.warns(UserWarning, match="could not trace"):
        report = lipschitz_bound(_Untraceable(), torch.randn(2, 4))
    assert not report.traced and report.last_linear is None


def test_a_report_is_refused_for_another_model_or_changed_weights():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(16, 4)
    report = lipschitz_bound(model, x[:1])
    lipschitz_radii(model, x, bound=report)  # the same model: accepted
    with pytest.raises(BadInputError, match="another model") as error:
        lipschitz_radii(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), x,
                        bound=report)
    _one_line(error)
    with torch.no_grad():
        model[2].weight.mul_(10)  # an in-place update, as an optimizer step does
    with pytest.raises(BadInputError, match="another model"):
        lipschitz_radii(model, x, bound=report)
    report = lipschitz_bound(model, x[:1])
    model[0].weight.data.mul_(3)  # .data writes skip the version counter, not the values
    with pytest.raises(BadInputError, match="another model"):
        lipschitz_radii(model, x, bound=report)


@pytest.mark.parametrize("change, message", [
    (lambda x: x.repeat(1, 3, 1, 1), "built for images of shape 1x8x8, got 3x8x8"),
    (lambda x: x * 255, "takes images in \\[0, 1\\]"),
])
def test_recipe_models_refuse_inputs_they_were_not_built_for(change, message):
    """#14: 3-channel images into a 1-channel recipe and images in [0, 255] got radii."""
    from lipcert import models
    from lipcert.bounds import Normalize

    model = models.build("sll-s", seed=0, image_size=8, width=4, depth=1, dense_width=8,
                         dense_depth=1).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    lipschitz_radii(model, x, y)  # the inputs it was built for are certified
    for wrapped in (model, nn.Sequential(Normalize([0.1], [0.3]), model)):
        with pytest.raises(BadInputError, match=message):
            lipschitz_radii(wrapped, change(x), y)
