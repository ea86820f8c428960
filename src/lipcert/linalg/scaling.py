"""Exact power-of-two rescaling, so every norm method works at any scale of its input.

The spectral norm is 1-homogeneous: ``||2^e A|| = 2^e ||A||``. Multiplying a floating-point
tensor by a power of two only changes exponents, so it is exact unless an entry leaves the
dtype's range. :func:`normalize` scales a weight so that its largest entry lies in
``[0.5, 1)`` (subnormal weights near 1e-40 in float32 become normal ones; kernels near 3e38,
whose FFTs, squares and Gram products overflow, become small), the method runs on that, and
:func:`restore` multiplies the result back, rounding UP where the product is inexact so that
an upper bound stays an upper bound. Entries more than ``2^-150`` below the largest one
(relative) may flush to zero in the first step; they change the norm by less than
``sqrt(numel) 2^-150`` relative, far below the dtype's rounding.

float16 and bfloat16 inputs are computed in float32 (an exact widening): torch's linear
algebra refuses them, and their rounding (2^-8 for bfloat16) would dominate any bound.
"""

from __future__ import annotations

import torch

from lipcert.errors import BadInputError
from lipcert.linalg.result import NormBound

__all__ = [
    "working_dtype",
    "binary_exponent",
    "scale_by_power_of_two",
    "normalize",
    "restore",
    "restore_bound",
]

_WIDENED = (torch.float16, torch.bfloat16)
# (exponent bits offset, mantissa bits, integer type of the same width)
_LAYOUT = {torch.float32: (127, 23, torch.int32), torch.float64: (1023, 52, torch.int64)}


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a norm is computed in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in _WIDENED else dtype


def binary_exponent(tensor: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Integer ``e`` with ``max |tensor| = m 2^e``, ``m`` in ``[0.5, 1)`` (0 for an all-zero
    tensor), over ``dims`` (kept, size 1) or over everything (0-dim). Detached, int64."""
    real = tensor.detach()
    if real.is_complex():  # the larger of the real and imaginary parts, entry by entry
        real = torch.view_as_real(real.resolve_conj()).abs().amax(dim=-1)
    if dims is None:
        largest = real.abs().amax()
    else:
        largest = real.abs().amax(dim=dims, keepdim=True)
    return torch.frexp(largest).exponent.to(torch.int64)


def _power_of_two(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2^exponent`` built from its bit pattern (exact), for exponents of normal numbers."""
    bias, mantissa_bits, int_type = _LAYOUT[dtype]
    bits = ((exponent + bias) << mantissa_bits).to(int_type)
    return bits.view(dtype)


def scale_by_power_of_two(tensor: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``tensor * 2^exponent`` (``exponent`` broadcasts), in two exact half steps so that
    factors like ``2^149`` (which float32 cannot hold) work. Differentiable in ``tensor``."""
    if tensor.is_complex():
        real = torch.view_as_real(tensor.resolve_conj())
        exponent = exponent[..., None] if exponent.dim() else exponent
        return torch.view_as_complex(scale_by_power_of_two(real, exponent).contiguous())
    dtype = tensor.dtype
    half = torch.div(exponent, 2, rounding_mode="floor")
    return tensor * _power_of_two(half, dtype) * _power_of_two(exponent - half, dtype)


def normalize(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scaled, e)`` with ``tensor = scaled * 2^e`` and ``max |scaled|`` in ``[0.5, 1)``;
    ``scaled`` in :func:`working_dtype`. Differentiable in ``tensor``."""
    tensor = tensor.to(working_dtype(tensor.dtype))
    exponent = binary_exponent(tensor)
    return scale_by_power_of_two(tensor, -exponent), exponent


def restore(
    value: torch.Tensor, exponent: torch.Tensor, *, round_up: bool, what: str = "the norm"
) -> torch.Tensor:
    """``value * 2^exponent`` in ``value``'s dtype; with ``round_up``, never below the exact
    product (a result that lands among subnormals is moved up to the next representable
    number). Differentiable in ``value``.

    Raises:
        BadInputError: the product overflows the dtype (the norm itself is not representable;
            compute in float64), or ``value`` is NaN or Inf.
    """
    if not bool(torch.isfinite(value).all()):
        raise BadInputError(
            f"{what} came out as {float(value):g} for finite weights in {value.dtype}: the "
            "computation overflowed. Convert the weights to float64 and try again."
        )
    result = scale_by_power_of_two(value, exponent)
    if not bool(torch.isfinite(result).all()):
        raise BadInputError(
            f"{what} is about {float(value.detach().double()) * 2.0 ** int(exponent):.4g}, "
            f"beyond the largest {value.dtype} ({torch.finfo(value.dtype).max:.4g}); convert the "
            "weights to float64 to get a finite bound."
        )
    if round_up:
        fixed = result.detach()
        for _ in range(2):  # at most two roundings (one per half step)
            back = scale_by_power_of_two(fixed, -exponent)
            up = torch.nextafter(fixed, torch.full_like(fixed, float("inf")))
            fixed = torch.where(back < value.detach(), up, fixed)
        result = result + (fixed - result.detach())
    return result


def restore_bound(bound: NormBound, exponent: torch.Tensor) -> NormBound:
    """``bound`` of a weight scaled by ``2^-exponent`` as a bound of the weight itself
    (rounded up when the guarantee is ``exact`` or ``upper``); see :func:`restore`."""
    value = restore(bound.value, exponent, round_up=bound.is_sound,
                    what=f"the norm from method {bound.method!r}")
    return NormBound(value, bound.guarantee, bound.method, bound.iterations)
