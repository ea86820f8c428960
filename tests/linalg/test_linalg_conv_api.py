"""conv_norm and operator_norm: gradients, modules, devices and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipcert.errors import BadInputError, LipcertError, UnsupportedLayerError
from lipcert.linalg import (
    CONV_METHODS,
    PowerIterationState,
    conv_norm,
    describe_conv,
    operator_norm,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("method", tuple(m for m in CONV_METHODS if m != "power"))
@pytest.mark.parametrize("mode,stride", [("circular", 1), ("zeros", 2)])
def test_gradcheck_float64(method, mode, stride):
    generator = torch.Generator().manual_seed(5)
    kernel = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64).requires_grad_()

    def norm(k):
        return conv_norm(k, 6, stride, 1, mode, method=method).value

    assert torch.autograd.gradcheck(norm, (kernel,))


@pytest.mark.parametrize("mode,stride", [("circular", 1), ("zeros", 2)])
def test_power_gradient_is_the_derivative_of_the_norm(mode, stride):
    generator = torch.Generator().manual_seed(5)
    kernel = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64).requires_grad_()
    direction = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64)

    def norm(k):
        return conv_norm(k, 6, stride, 1, mode, method="power", n_iter=3000).value

    (grad,) = torch.autograd.grad(norm(kernel), kernel)
    step = 1e-5
    with torch.no_grad():
        slope = (norm(kernel + step * direction) - norm(kernel - step * direction)) / (2 * step)
    assert float((grad * direction).sum()) == pytest.approx(float(slope), rel=1e-5)


def test_gradient_of_the_exact_norm_is_finite_for_a_zero_frequency():
    # [1, -1] kills frequency 0: a zero block must not poison the gradient
    kernel = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64, requires_grad=True)
    for method in ("gram", "gram-pruned", "gram-kernel"):
        bound = conv_norm(kernel, 8, padding_mode="circular", padding="same", method=method)
        (grad,) = torch.autograd.grad(bound.value, kernel)
        assert torch.isfinite(grad).all()
        assert float(bound) == pytest.approx(2.0, rel=1e-3)


def _linear_part_norm(module: nn.Module, input_shape) -> float:
    """Oracle: exact SVD of the Jacobian of the module with its bias removed."""
    if getattr(module, "bias", None) is not None:
        module.bias = None
    x = torch.zeros(input_shape, dtype=torch.float64)
    jac = torch.func.jacrev(module)(x).reshape(module(x).numel(), x.numel())
    return float(torch.linalg.svdvals(jac)[0])


@pytest.mark.parametrize(
    "module,input_shape",
    [
        (nn.Linear(5, 3), (2, 5)),
        (nn.Conv1d(2, 3, 3, padding=1), (1, 2, 7)),
        (nn.Conv1d(3, 2, 4, stride=2, padding="valid", padding_mode="circular"), (1, 3, 8)),
        (nn.Conv2d(2, 3, 3, stride=2, padding=1), (1, 2, 6, 6)),
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), (1, 2, 5, 4)),
        (nn.Conv2d(3, 2, (3, 1), stride=(1, 2), padding=(1, 0)), (1, 3, 5, 6)),
        (nn.Conv2d(2, 3, 2, padding="same"), (4, 2, 5, 5)),
    ],
)
def test_operator_norm_matches_the_jacobian(module, input_shape, guarantee_check):
    module = module.double()
    bound = operator_norm(module, input_shape)
    assert bound.is_sound
    guarantee_check(bound, _linear_part_norm(module, input_shape))
    if isinstance(module, nn.Linear):
        assert bound.guarantee == "exact"
    if isinstance(module, nn.Conv2d) and module.padding_mode == "circular":
        assert bound.guarantee == "exact"


@pytest.mark.parametrize(
    "module,input_shape,error",
    [
        (nn.Conv2d(2, 2, 3, dilation=2), (1, 2, 8, 8), UnsupportedLayerError),
        (nn.Conv2d(2, 2, 3, groups=2), (1, 2, 8, 8), UnsupportedLayerError),
        (
            nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
            (1, 2, 8, 8),
            UnsupportedLayerError,
        ),
        (nn.ConvTranspose2d(2, 2, 3), (1, 2, 8, 8), UnsupportedLayerError),
        (nn.ReLU(), (1, 2), UnsupportedLayerError),
        (nn.Conv2d(2, 2, 3), (1, 3, 8, 8), BadInputError),
        (nn.Conv2d(2, 2, 3), (2, 8, 8), BadInputError),
        (nn.Conv2d(2, 2, 3), (1, 2, 2, 8), BadInputError),
        (nn.Linear(4, 2), (1, 5), BadInputError),
    ],
)
def test_operator_norm_refuses_what_it_cannot_bound(module, input_shape, error):
    with pytest.raises(error):
        operator_norm(module, input_shape)


def test_nan_weights_in_a_module_raise():
    layer = nn.Conv2d(2, 2, 3)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(LipcertError):
        operator_norm(layer, (1, 2, 8, 8))


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((torch.full((2, 2, 3, 3), float("inf")), 8), {}),
        ((torch.ones(2, 2, 3, 3, 3), 8), {}),
        ((torch.ones(2, 3), 8), {}),
        ((torch.ones(2, 2, 3, 3), 2), {}),
        ((torch.ones(2, 2, 5), 3), {"padding": 0}),
        ((torch.ones(2, 2, 3, 3), 8), {"method": "fft"}),
        ((torch.ones(2, 2, 3, 3), 8), {"method": "gram", "grid": 8}),
        ((torch.ones(2, 2, 3, 3), 8), {"padding_mode": "reflect"}),
        ((torch.ones(2, 2, 3, 3), 8), {"padding": -1}),
        ((torch.ones(2, 2, 3, 3), 8), {"padding": "same", "stride": 2}),
        ((torch.ones(2, 2, 3, 3), 4), {"padding": 5, "padding_mode": "circular"}),
        ((torch.ones(2, 2, 3, 3), (8, 8, 8)), {}),
        ((torch.ones(2, 2, 3, 3), 8), {"stride": 0}),
        ((torch.ones(2, 2, 3, 3), 8), {"method": "gram-pruned", "n_iter": 2, "n_probe": 3}),
        ((torch.ones(2, 2, 3, 3), 8), {"method": "toeplitz", "grid": 3}),
    ],
)
def test_conv_norm_bad_input_raises(args, kwargs):
    with pytest.raises(LipcertError):
        conv_norm(*args, **kwargs)


def test_power_state_is_reused_across_calls(conv_oracle):
    kernel = torch.randn(
        4, 3, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    state = PowerIterationState((1, 3, 8, 8), seed=0, dtype=torch.float64)
    first = float(conv_norm(kernel, 8, padding=1, method="power", n_iter=2, state=state))
    for _ in range(300):
        last = float(conv_norm(kernel, 8, padding=1, method="power", n_iter=2, state=state))
    truth = conv_oracle(kernel, 8, 1, 1, "zeros")
    assert first <= last <= truth * (1 + 1e-12)
    assert last >= 0.999 * truth
    with pytest.raises(BadInputError):
        conv_norm(kernel, 9, padding=1, method="power", state=state)


def test_describe_conv_says_how_strides_are_handled():
    assert describe_conv((3, 3), 8, 1, 1, "circular").startswith("exact")
    assert "polyphase" in describe_conv((3, 3), 8, 2, 1, "zeros")
    assert "stride-1 upper bound" in describe_conv((3, 3), 7, 2, 1, "circular")


@pytest.mark.parametrize("device", DEVICES)
def test_results_live_on_the_kernel_device(device):
    kernel = torch.randn(3, 2, 3, 3, device=device)
    for method in CONV_METHODS + ("auto",):
        assert conv_norm(kernel, 6, 2, 1, method=method).value.device == kernel.device
