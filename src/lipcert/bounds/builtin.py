"""Lipschitz rules of the standard torch.nn modules, registered on import.

Each rule bounds the l2 Lipschitz constant of the module on one sample (LMT, Tsuzuku et al.
2018, arXiv 1802.04034): operator norms of linear layers through :mod:`lipcert.linalg` at
the traced input size, eval-mode batch norm max |gamma| / sqrt(var + eps), activations by
their largest slope, pooling by overlap counts (:mod:`lipcert.bounds.pooling`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcert.bounds.pooling import (
    adaptive_max_pool_bound,
    linear_pool_bound,
    lp_pool_bound,
    max_pool_bound,
)
from lipcert.bounds.rules import input_dtype, register_rule
from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.linalg import conv_norm, operator_norm
from lipcert.linalg.result import NormBound

# sup_x GELU'(x) = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.1289 (also ~1.1290 for the tanh form).
GELU_SLOPE = 1.13
# sup_x SiLU'(x) = 1.0998 (at x ~ 2.40).
SILU_SLOPE = 1.1


def _constant(value: float, guarantee: str = "exact", method: str = "max slope") -> NormBound:
    return NormBound(torch.tensor(float(value), dtype=torch.float64), guarantee, method)


def plain_kernel(weight: torch.Tensor, groups: int, dilation: tuple[int, ...]) -> torch.Tensor:
    """The kernel of the groups-1, dilation-1 convolution equal to a grouped / dilated one:
    block-diagonal over the groups, zeros between the dilated taps (any number of dims)."""
    out_channels, in_per_group, *size = weight.shape
    if groups > 1:
        out_per_group = out_channels // groups
        dense = weight.new_zeros(groups, out_per_group, groups, in_per_group, *size)
        index = torch.arange(groups, device=weight.device)
        dense[index, :, index] = weight.view(groups, out_per_group, in_per_group, *size)
        weight = dense.reshape(out_channels, groups * in_per_group, *size)
    if any(d != 1 for d in dilation):
        spread = weight.new_zeros(*weight.shape[:2],
                                  *(d * (k - 1) + 1 for k, d in zip(size, dilation, strict=True)))
        spread[(..., *(slice(None, None, d) for d in dilation))] = weight
        weight = spread
    return weight


def linear_map_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """Operator norm of Linear / Conv1d / Conv2d at the traced input size (lipcert.linalg);
    grouped or dilated convolutions through their equivalent plain kernel."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and (
            module.groups != 1 or any(d != 1 for d in module.dilation)):
        if module.padding_mode not in ("zeros", "circular") or isinstance(module.padding, str):
            raise UnsupportedLayerError(
                f"{type(module).__name__} with groups/dilation needs numeric padding and "
                f"padding_mode 'zeros' or 'circular' (got {module.padding!r}, "
                f"{module.padding_mode!r}).")
        if len(input_shape) != module.weight.dim() or input_shape[1] != module.in_channels:
            raise BadInputError(f"{type(module).__name__} expects {module.in_channels} input "
                                f"channels, got input_shape {tuple(input_shape)}.")
        kernel = plain_kernel(module.weight, module.groups, tuple(module.dilation))
        return conv_norm(kernel, tuple(input_shape)[2:], stride=module.stride,
                         padding=module.padding, padding_mode=module.padding_mode,
                         method="auto")
    return operator_norm(module, input_shape, method="auto")


def conv_transpose_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """ConvTranspose1d/2d is the adjoint of the convolution with the same weight, stride and
    padding acting on the transposed layer's OUTPUT size, so both have the same norm."""
    dims = 1 if isinstance(module, nn.ConvTranspose1d) else 2
    if module.groups != 1 or any(d != 1 for d in module.dilation) \
            or module.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"{type(module).__name__} with groups={module.groups}, dilation={module.dilation}, "
            f"padding_mode={module.padding_mode!r} has no lipcert rule (groups=1, dilation=1 and "
            "zero padding are supported); register one with lipcert.bounds.register_rule."
        )
    with torch.no_grad():
        probe = torch.zeros(1, *input_shape[1:], dtype=module.weight.dtype,
                            device=module.weight.device)
        out_size = tuple(module(probe).shape[-dims:])
    return conv_transpose_norm(module, out_size)


def conv_transpose_norm(module: nn.Module, output_size: tuple[int, ...]) -> NormBound:
    """Norm of ConvTranspose1d/2d producing spatial ``output_size``: that of the convolution
    (same weight, stride, padding) on inputs of that size, whose adjoint it is."""
    dims = 1 if isinstance(module, nn.ConvTranspose1d) else 2
    return conv_norm(module.weight, tuple(output_size)[-dims:], stride=module.stride,
                     padding=module.padding, padding_mode="zeros", method="auto")


def _conv_transpose_with_output_size(module: nn.Module, input_shape: torch.Size,
                                     output_shape: torch.Size, args: tuple,
                                     kwargs: dict) -> NormBound:
    """ConvTranspose called as ``layer(x, output_size)``: bounded at the size it produced."""
    if len(args) + len(kwargs) != 1 or set(kwargs) - {"output_size"}:
        raise UnsupportedLayerError(f"{type(module).__name__} takes only output_size besides "
                                    "its input.")
    conv_transpose_rule(module, input_shape)  # the same refusals as a plain call
    return conv_transpose_norm(module, tuple(output_shape))


# Rules of modules called with arguments besides the input: fn(module, input_shape,
# output_shape, extra_args, extra_kwargs) -> NormBound. A module called with extra arguments
# and no entry here is refused (its registered rule bounds the plain call ``module(x)``).
CALL_ARGUMENT_RULES = {
    nn.ConvTranspose1d: _conv_transpose_with_output_size,
    nn.ConvTranspose2d: _conv_transpose_with_output_size,
}


def _refuse_training(module: nn.Module, why: str) -> None:
    if module.training:
        raise UnsupportedLayerError(
            f"{type(module).__name__} is in training mode: {why}. Call model.eval() first."
        )


def batch_norm_rule(module: nn.modules.batchnorm._BatchNorm, input_shape: torch.Size) -> NormBound:
    """Eval-mode batch norm is diagonal: exactly max |gamma| / sqrt(running_var + eps)."""
    _refuse_training(module, "it normalizes with the statistics of the batch, so one sample's "
                             "output depends on the others")
    if module.running_var is None:
        raise UnsupportedLayerError(
            "BatchNorm without running statistics (track_running_stats=False) uses batch "
            "statistics even in eval mode; lipcert cannot bound it per sample."
        )
    scale = torch.rsqrt(module.running_var.to(torch.float64) + module.eps)
    if module.weight is not None:
        scale = module.weight.to(torch.float64).abs() * scale
    return NormBound(scale.max(), "exact", "max|gamma|/sqrt(var+eps)")


def layer_norm_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """Layer/group norm: the Jacobian of (x - mean)/sqrt(var + eps) has norm <= 1/sqrt(eps)
    everywhere, so max |gamma| / sqrt(eps) is a (loose but sound) Lipschitz bound."""
    value = torch.tensor(1.0 / math.sqrt(module.eps), dtype=torch.float64)
    if getattr(module, "weight", None) is not None:
        value = module.weight.to(torch.float64).abs().max() * value
    return NormBound(value, "upper", "max|gamma|/sqrt(eps)")


# Softplus switches to the identity where beta x > threshold, with a jump of
# log(1 + exp(-threshold)) / |beta| there: a discontinuity, so not Lipschitz at all. Relative
# to the output t / |beta| at the switch the jump is ``log1p(exp(-t)) / t`` (1e-10 for the
# default t = 20). The rule accepts it only where the jump is below a quarter of the machine
# epsilon of the dtype the layer computes in, i.e. below half an ulp of the output there:
# rounding then hides it (float32 at t = 20: yes; float64: no, 2e-9 flips float64 radii).
SOFTPLUS_JUMP_EPS_FRACTION = 0.25


def softplus_slope(beta: float, threshold: float,
                   dtype: torch.dtype = torch.float64) -> NormBound:
    """1 (the largest slope) when the jump at ``threshold`` is hidden by the rounding of
    ``dtype`` (the dtype Softplus computes in), else refused."""
    t = float(threshold)
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    if float(beta) == 0.0 or t <= 0 or (math.log1p(math.exp(-t)) / t
                                        > SOFTPLUS_JUMP_EPS_FRACTION * eps):
        raise UnsupportedLayerError(
            f"Softplus(beta={beta}, threshold={threshold}) in {dtype} jumps by "
            "log(1 + exp(-threshold)) / |beta| where it switches to the identity, a "
            "discontinuity above the rounding of that dtype, so it is not Lipschitz. In "
            "float32 use a threshold >= 17 (the default is 20); in float64 no threshold torch "
            "accepts hides the jump: use another smooth activation (e.g. ELU, SiLU).")
    return _constant(1.0)


def softplus_rule(module: nn.Softplus, input_shape: torch.Size) -> NormBound:
    """1 where the threshold jump is below the input dtype's rounding (see softplus_slope)."""
    return softplus_slope(module.beta, module.threshold, input_dtype())


def leaky_relu_rule(module: nn.LeakyReLU, input_shape: torch.Size) -> NormBound:
    return _constant(max(1.0, abs(module.negative_slope)))


def elu_rule(module: nn.ELU, input_shape: torch.Size) -> NormBound:
    return _constant(max(1.0, abs(module.alpha)))


def flatten_rule(module: nn.Flatten, input_shape: torch.Size) -> NormBound:
    start = module.start_dim % len(input_shape)
    if start == 0:
        raise UnsupportedLayerError("Flatten(start_dim=0) merges the batch dimension; the "
                                    "output is no longer one row per sample.")
    return _constant(1.0, method="reshape")


def reshape_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """Permutations of the entries of each sample (PixelShuffle / PixelUnshuffle): exactly 1."""
    return _constant(1.0, method="reshape")


def unflatten_rule(module: nn.Unflatten, input_shape: torch.Size) -> NormBound:
    if isinstance(module.dim, int) and module.dim % len(input_shape) == 0:
        raise UnsupportedLayerError("Unflatten(dim=0) splits the batch dimension.")
    return _constant(1.0, method="reshape")


def dropout_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    _refuse_training(module, "dropout is random in training mode")
    return _constant(1.0, method="identity (eval)")


def identity_rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
    return _constant(1.0, method="identity")


def _slope(value: float, guarantee: str = "exact"):
    def rule(module: nn.Module, input_shape: torch.Size) -> NormBound:
        return _constant(value, guarantee)

    rule.__doc__ = f"Largest slope {value} ({guarantee})."
    return rule


for _type in (nn.Linear, nn.Conv1d, nn.Conv2d):
    register_rule(_type, linear_map_rule)
for _type in (nn.ConvTranspose1d, nn.ConvTranspose2d):
    register_rule(_type, conv_transpose_rule)
for _type in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_rule(_type, batch_norm_rule)
for _type in (nn.LayerNorm, nn.GroupNorm):
    register_rule(_type, layer_norm_rule)
for _type in (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh):
    register_rule(_type, _slope(1.0))
register_rule(nn.Sigmoid, _slope(0.25))
register_rule(nn.GELU, _slope(GELU_SLOPE, "upper"))
register_rule(nn.SiLU, _slope(SILU_SLOPE, "upper"))
register_rule(nn.Softplus, softplus_rule)
register_rule(nn.LeakyReLU, leaky_relu_rule)
register_rule(nn.ELU, elu_rule)
register_rule(nn.Flatten, flatten_rule)
register_rule(nn.Unflatten, unflatten_rule)
register_rule(nn.Identity, identity_rule)
for _type in (nn.PixelShuffle, nn.PixelUnshuffle):
    register_rule(_type, reshape_rule)
for _type in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
    register_rule(_type, dropout_rule)
for _type in (nn.MaxPool1d, nn.MaxPool2d):
    register_rule(_type, max_pool_bound)
for _type in (nn.LPPool1d, nn.LPPool2d):
    register_rule(_type, lp_pool_bound)
for _type in (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d):
    register_rule(_type, adaptive_max_pool_bound)
for _type in (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
    register_rule(_type, linear_pool_bound)

# Modules that are bijective l2 isometries (reshapes, identity); a chain of them around one
# exact step keeps the network bound exact.
ISOMETRY_TYPES: tuple[type, ...] = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.PixelShuffle, nn.PixelUnshuffle,
)
