"""The rounding allowance: the float32 logits stay within it of the float64 computation
(the oracle, whose own error is ~1e-16 relative) at x and anywhere in the ball around x."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lipcert.bounds import lipschitz_bound
from lipcert.certify.rounding import forward_with_allowance, gamma, unit_roundoff


def _mlp(bias: float):
    model = nn.Sequential(nn.Linear(24, 96), nn.Tanh(), nn.Linear(96, 96), nn.ReLU(),
                          nn.Sequential(nn.Linear(96, 64), nn.LeakyReLU(0.1)),
                          nn.Linear(64, 5))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.bias.uniform_(-bias, bias)
        model[-1].bias.uniform_(-100 * bias, 100 * bias)  # a large offset on the logits
    return model, (24,)


def _conv(bias: float):
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, stride=2), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1, padding_mode="circular"), nn.GELU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.bias.uniform_(-bias, bias)
        model[-1].bias.uniform_(-100 * bias, 100 * bias)
    return model, (2, 8, 8)


@pytest.mark.parametrize("bias", [0.1, 1e4])
@pytest.mark.parametrize("factory", [_mlp, _conv], ids=["mlp", "conv"])
def test_proven_allowance_covers_float32_rounding_in_the_ball(factory, bias):
    torch.manual_seed(7)
    model, shape = factory(bias)
    model = model.float().eval()
    reference = [p.detach().clone() for p in model.parameters()]
    x = (torch.randn(32, *shape) * 3).float()
    report = lipschitz_bound(model, x[:1])
    logits, allowance = forward_with_allowance(model, x, float(report), report, torch.float64)
    assert allowance.proven and allowance.dtype == torch.float32
    exact = torch.func.functional_call(
        model, {n: p.double() for n, p in model.named_parameters()}, (x.double(),))
    with torch.no_grad():
        error = (logits.double() - exact).norm(dim=1)
    assert bool((error <= allowance.offset).all())
    assert bool((allowance.reference < 1e-6 * allowance.offset).all())
    # At x' within r of x (fresh float32 points), the model's error stays below offset + slope r.
    generator = torch.Generator().manual_seed(0)
    for r in (1e-3, 1.0, 30.0):
        step = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        step = step / step.flatten(1).norm(dim=1).view(-1, *[1] * len(shape)) * r
        moved = (x.double() + 0.999 * step).float()
        with torch.no_grad():
            error = (model(moved).double() - torch.func.functional_call(
                model, {n: p.double() for n, p in model.named_parameters()},
                (moved.double(),))).norm(dim=1)
        assert bool((error <= allowance.offset + allowance.slope * r).all())
    # The bound is about the rounding, not vacuous: well below the size of the logits.
    assert bool((allowance.offset < 1e-3 * (1 + exact.abs().amax(dim=1))).all())
    assert all(torch.equal(a, b) for a, b in zip(reference, model.parameters(), strict=True))


def test_large_offsets_make_the_allowance_grow_with_them():
    model, _ = _mlp(0.0)
    model = model.float()
    x = torch.randn(8, 24).float()
    _, small = forward_with_allowance(model, x, 1.0)
    with torch.no_grad():
        model[-1].bias.fill_(1e6)
    _, large = forward_with_allowance(model, x, 1.0)
    # one float32 ulp of 1e6 is 0.0625; the bound covers at least half of it per logit
    assert bool((large.offset > 0.03).all()) and bool((large.offset > 100 * small.offset).all())


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * 2.0


def test_only_plain_chains_get_a_proof():
    x = torch.randn(4, 4).float()
    chain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).float()
    assert forward_with_allowance(chain, x, 1.0)[1].proven
    _, estimate = forward_with_allowance(_Functional().float(), x, 2.0)
    assert not estimate.proven and bool((estimate.offset > 0).all())
    handle = chain[1].register_forward_hook(lambda module, args, out: out * 100)
    try:
        assert not forward_with_allowance(chain, x, 1.0)[1].proven
    finally:
        handle.remove()
    chain.train()
    dropout = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).float()
    assert not forward_with_allowance(dropout, x, 1.0)[1].proven  # random in training mode


def test_unit_roundoff_and_gamma():
    assert unit_roundoff(torch.float32) == 2.0 ** -24
    assert unit_roundoff(torch.float64) == 2.0 ** -53
    assert gamma(10, 2.0 ** -24) == pytest.approx(10 * 2.0 ** -24, rel=1e-6)
    assert math.isinf(gamma(2 ** 24, 2.0 ** -24))
    cuda = torch.device("cuda")
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert unit_roundoff(torch.float32, cuda, matmul=True) == 2.0 ** -11
        assert unit_roundoff(torch.float32, cuda) == 2.0 ** -24
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


class _UpcastAtTheEnd(nn.Module):
    """Computes in float32 and returns float64 logits."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).float()

    def forward(self, x):
        return self.fc(x.float()).double() * 1.0


def test_estimate_uses_the_least_precise_dtype_inside_the_model():
    x = torch.randn(4, 4).float()
    _, estimate = forward_with_allowance(_UpcastAtTheEnd(), x, 1.0)
    assert not estimate.proven
    # float32 work: the allowance is at the float32 scale, not float64's 1e-16
    assert bool((estimate.offset > 1e-8).all())


class _DownInside(nn.Module):
    """Casts to float32 with a tensor method, whatever the weights' dtype."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return (self.fc(x).float() * 3.0).to(x.dtype)


def test_a_float64_copy_that_casts_down_inside_is_not_used_as_the_reference():
    from lipcert.certify.lipschitz import _float64_logits

    model = _DownInside().float()
    x = torch.randn(5, 4).float()
    assert _float64_logits(model, x) is None
    assert _float64_logits(nn.Linear(4, 3).float(), x) is not None
    _, estimate = forward_with_allowance(_DownInside().double(), x.double(), 3.0)
    assert bool((estimate.offset > 1e-8).all())  # float32 work inside a float64 model


def test_estimate_covers_the_rounding_of_a_lipcert_recipe():
    from lipcert import models

    torch.manual_seed(9)
    model = models.build("sll-s", image_size=8, width=4, depth=2, dense_width=16,
                         dense_depth=1).float().eval()
    x = torch.rand(16, 1, 8, 8).float()
    report = lipschitz_bound(model, x[:1])
    logits, allowance = forward_with_allowance(model, x, float(report), report, torch.float64)
    assert not allowance.proven
    twin = copy.deepcopy(model).double()
    with torch.no_grad():
        error = (logits.double() - twin(x.double())).norm(dim=1)
    assert bool((error <= allowance.offset).all())
    assert bool((allowance.offset < 1e-2 * (1 + logits.abs().amax(dim=1).double())).all())
