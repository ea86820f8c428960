"""Lipschitz bounds of pooling layers (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034, LMT).

Max pooling: each output moves by at most the largest change inside its window, so its
squared change is at most the window's squared l2 change; an input lying in at most ``c``
windows gives L = sqrt(c). ``c`` is the product over spatial dims of
min(k, ceil((d (k - 1) + 1) / s), n_out), the windows of stride ``s`` and dilation ``d``
that can contain one input position (LMT's overlap count).

L2 pooling (LPPool with p = 2) rescales each window's l2 norm by sqrt(k / m), with ``m`` the
window's size (smaller than ``k`` at ``ceil_mode`` borders); :func:`lp_pool_bound`.

Average pooling is linear with non-negative entries A, so ||A||_2 <= sqrt(||A||_1 ||A||_inf)
(Schur's test); the row sums are ``pool(ones)`` and the column sums ``A^T ones``, both
computed by running the layer itself. For the usual configuration this is LMT's
sqrt(c / (k_h k_w)), and it also covers padding, ``ceil_mode``, ``count_include_pad=False``,
``divisor_override`` and adaptive pooling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import UnsupportedLayerError
from lipcert.linalg.result import NormBound


def _spatial(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def lp_pool_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """LPPool1d/2d with p = 2. torch computes each output as ``sqrt(k * mean of the squares
    in the window)``: ``sqrt(k / m) ||x_w||`` for a window holding ``m`` of the ``k`` kernel
    positions (``m < k`` for the partial border windows of ``ceil_mode=True``). As the l2
    norm is 1-Lipschitz, ``||change of out||^2 <= sum_w (k / m_w) ||change of x_w||^2``
    ``<= max_i (sum over windows w containing i of k / m_w) ||change of x||^2``. The column
    sums are ``A^T 1`` for the linear map ``A z = k * avg_pool(z)`` torch applies to the
    squares, by autograd through the same avg_pool call."""
    if float(module.norm_type) != 2.0:
        raise UnsupportedLayerError(
            f"{type(module).__name__}(norm_type={module.norm_type}) has no lipcert rule; only "
            "p = 2 (window l2 norms) is bounded. Use p = 2 or register a rule with "
            "lipcert.bounds.register_rule."
        )
    dims = 1 if isinstance(module, nn.LPPool1d) else 2
    kernel = _spatial(module.kernel_size, dims)
    stride = _spatial(module.stride if module.stride is not None else module.kernel_size, dims)
    pool = F.avg_pool1d if dims == 1 else F.avg_pool2d
    with torch.enable_grad():
        ones = torch.ones(1, 1, *input_shape[-dims:], dtype=torch.float64, requires_grad=True)
        squares = pool(ones, kernel, stride, 0, module.ceil_mode) * math.prod(kernel)
        (column_sums,) = torch.autograd.grad(squares.sum(), ones)
    return NormBound(column_sums.max().sqrt(), "upper",
                     "l2-pool: sqrt(max column sum of k / window size)")


def max_pool_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """sqrt(number of windows that can share one input position) for MaxPool1d/2d."""
    if getattr(module, "return_indices", False):
        raise UnsupportedLayerError("max pooling with return_indices=True returns a tuple; "
                                    "lipcert bounds only the pooled tensor (set it to False).")
    dims = 1 if isinstance(module, nn.MaxPool1d) else 2
    spatial = tuple(input_shape[-dims:])
    out = module(torch.zeros(1, 1, *spatial)).shape[-dims:]
    kernel = _spatial(module.kernel_size, dims)
    stride = _spatial(module.stride if module.stride is not None else module.kernel_size, dims)
    dilation = _spatial(getattr(module, "dilation", 1), dims)
    count = 1
    for k, s, d, n_out in zip(kernel, stride, dilation, out, strict=True):
        count *= min(k, math.ceil((d * (k - 1) + 1) / s), n_out)
    return NormBound(torch.tensor(math.sqrt(count), dtype=torch.float64), "upper",
                     f"window-pool overlap count {count}")


def adaptive_max_pool_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """sqrt(most adaptive windows sharing one input position) for AdaptiveMaxPool1d/2d."""
    if module.return_indices:
        raise UnsupportedLayerError("adaptive max pooling with return_indices=True returns a "
                                    "tuple; set it to False.")
    dims = 1 if isinstance(module, nn.AdaptiveMaxPool1d) else 2
    spatial = tuple(input_shape[-dims:])
    outs = _spatial(module.output_size, dims)
    count = 1
    for n, o in zip(spatial, outs, strict=True):
        o = n if o is None else o
        per_position = [0] * n
        for j in range(o):  # PyTorch's adaptive windows: [floor(j n / o), ceil((j + 1) n / o))
            for i in range((j * n) // o, -((-(j + 1) * n) // o)):
                per_position[i] += 1
        count *= max(per_position)
    return NormBound(torch.tensor(math.sqrt(count), dtype=torch.float64), "upper",
                     f"adaptive max-pool overlap count {count}")


def linear_pool_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    """Schur's test sqrt(max row sum * max column sum) for average pooling (any variant)."""
    dims = 1 if "1d" in type(module).__name__ else 2
    with torch.enable_grad():  # A^T 1 by autograd, also when called under torch.no_grad()
        ones = torch.ones(1, 1, *input_shape[-dims:], dtype=torch.float64, requires_grad=True)
        pooled = module(ones)
        (column_sums,) = torch.autograd.grad(pooled.sum(), ones)
    # Every entry of A has the sign of its divisor (a negative ``divisor_override`` makes all
    # of them negative), so |A| 1 = |A 1| and |A|^T 1 = |A^T 1|: take magnitudes.
    value = torch.sqrt(pooled.detach().abs().max() * column_sums.abs().max())
    return NormBound(value, "upper", "pooling Schur test (LMT overlap)")
