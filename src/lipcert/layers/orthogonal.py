"""Orthogonal layers: ``OrthogonalLinear`` (Cayley, matrix exponential or Bjorck) and
``CayleyConv2d`` (Trockman & Kolter, ICLR 2021, arXiv 2104.07167).

A non-square weight is the leading ``out x in`` block of a square orthogonal matrix, so it has
orthonormal columns (``out >= in``, an isometry) or rows (``out < in``): spectral norm 1.
Bjorck orthonormalization (Bjorck & Bowie 1971; Anil et al., arXiv 1811.05381) starts from
``W / gram_bound(W)`` (singular values in (0, 1]) and maps each singular value by
``s -> 1.5 s - 0.5 s^3``, which keeps it in (0, 1] and drives it to 1; with few steps the weight
is only approximately orthogonal, and ``lipschitz_bound`` reports its true spectral norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipcert.errors import BadInputError, UnsupportedLayerError, check_finite
from lipcert.layers._shapes import check_batch_shape
from lipcert.layers.parametrized import ParametrizedLinear
from lipcert.linalg import NormBound, dense_norm

__all__ = ["OrthogonalLinear", "CayleyConv2d", "ORTHOGONAL_METHODS", "cayley"]

ORTHOGONAL_METHODS = ("cayley", "matrix_exp", "bjorck")


def cayley(generator: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Leading ``rows x cols`` block of the Cayley transform ``(I + S)^{-1} (I - S)`` of the
    skew-Hermitian ``S = A - A^H``, where ``A`` is ``generator`` (``(..., r, c)``) zero-padded to
    a square of size ``max(r, c)``. The square transform is unitary, so the block has norm <= 1
    (exactly 1, with orthonormal columns or rows, when it spans a full side)."""
    size = max(generator.shape[-2:])
    square = generator.new_zeros(*generator.shape[:-2], size, size)
    square[..., : generator.shape[-2], : generator.shape[-1]] = generator
    skew = square - square.mH
    identity = torch.eye(size, dtype=generator.dtype, device=generator.device)
    # (I + S)^{-1} (I - S) = 2 (I + S)^{-1} - I; I + S is well conditioned (its singular
    # values are >= 1 for skew-Hermitian S), and one inverse is cheaper than a solve.
    return (2 * torch.linalg.inv(identity + skew) - identity)[..., :rows, :cols]


def _apply_blocks(blocks: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """``y(f) = Q(f) x(f)`` for blocks ``(U, V, o, i)`` and a batch spectrum ``(b, i, U, V)``.

    Written as one real batched product with ``[[Re Q, -Im Q], [Im Q, Re Q]]``, which CPU
    BLAS runs several times faster than the complex product."""
    outputs = blocks.shape[-2]
    real_blocks = torch.cat((torch.cat((blocks.real, -blocks.imag), dim=-1),
                             torch.cat((blocks.imag, blocks.real), dim=-1)), dim=-2)
    columns = spectrum.permute(2, 3, 1, 0)
    product = real_blocks @ torch.cat((columns.real, columns.imag), dim=-2)
    result = torch.complex(product[..., :outputs, :], product[..., outputs:, :])
    return result.permute(3, 2, 0, 1)


class _Orthogonalize(nn.Module):
    """Parametrization ``W -> orthogonal matrix of the same shape``."""

    def __init__(self, method: str, n_iter: int) -> None:
        super().__init__()
        self.method = method
        self.n_iter = n_iter

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        tall = weight if weight.shape[0] >= weight.shape[1] else weight.mT
        rows, cols = tall.shape
        if self.method == "cayley":
            result = cayley(tall, rows, cols)
        elif self.method == "matrix_exp":
            square = tall.new_zeros(rows, rows)
            square[:, :cols] = tall
            result = torch.linalg.matrix_exp(square - square.mT)[:, :cols]
        else:
            result = tall / dense_norm(tall, method="gram").value
            identity = torch.eye(cols, dtype=tall.dtype, device=tall.device)
            for _ in range(self.n_iter):
                result = result @ (1.5 * identity - 0.5 * result.mT @ result)
        return result if weight.shape[0] >= weight.shape[1] else result.mT


class OrthogonalLinear(ParametrizedLinear):
    """``nn.Linear`` with an orthogonal weight (orthonormal columns or rows). Arguments as
    ``nn.Linear``, plus:

    Args:
        method: ``"cayley"``, ``"matrix_exp"`` (exact up to rounding) or ``"bjorck"``
            (approximate with few steps; its true norm is reported).
        n_iter: Bjorck steps (ignored by the other methods).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, method: str = "cayley", n_iter: int = 15) -> None:
        if method not in ORTHOGONAL_METHODS:
            raise BadInputError(f"OrthogonalLinear: method must be one of {ORTHOGONAL_METHODS}, "
                                f"got {method!r}.")
        super().__init__(in_features, out_features, bias, device, dtype,
                         parametrization=_Orthogonalize(method, int(n_iter)))


class CayleyConv2d(nn.Module):
    """Orthogonal circular convolution by the Cayley transform in the Fourier domain
    (Trockman & Kolter 2021, arXiv 2104.07167).

    With ``W(f)`` the 2-D FFT of the kernel at the input size, each frequency applies
    ``Q(f) = cayley(W(f))`` (module function :func:`cayley`) to the input's FFT. The operator's
    singular values are those of the blocks ``Q(f)`` (Sedghi et al., arXiv 1805.10408), so it is
    an isometry when ``out_channels >= in_channels`` and has norm exactly 1 otherwise, for every
    input size. Output size = input size (circular "same" padding, stride 1). The effective
    kernel covers the whole input, which is why :func:`lipcert.layers.to_vanilla` exports an
    input-size-specific ``nn.Conv2d`` with a full-size kernel and circular padding.

    Args:
        in_channels, out_channels, kernel_size: as ``nn.Conv2d`` (square kernel).
        stride: must be 1 (use :class:`InvertibleDownsample` to downsample).
        bias: learnable bias.
        generator: optional torch.Generator for the initialization.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, device=None, dtype=None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if stride != 1:
            raise UnsupportedLayerError("CayleyConv2d supports stride 1 only; downsample with "
                                        "InvertibleDownsample.")
        if min(in_channels, out_channels, kernel_size) < 1:
            raise BadInputError("CayleyConv2d: channels and kernel_size must be positive.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        options = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size,
                                               kernel_size, **options))
        self.bias = nn.Parameter(torch.zeros(out_channels, **options)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        self._last_input_shape: tuple[int, ...] | None = None

    def frequency_blocks(self, size: tuple[int, int]) -> torch.Tensor:
        """``Q(f)`` for the ``H x (W // 2 + 1)`` frequencies of an ``H x W`` input, shape
        ``(H, W // 2 + 1, out, in)``."""
        spectrum = torch.fft.rfft2(self.weight, s=tuple(size)).permute(2, 3, 0, 1)
        return cayley(spectrum, self.out_channels, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = check_batch_shape(x.shape, (4,), self.in_channels, "CayleyConv2d")
        self._last_input_shape = shape
        size = shape[2:]
        spectrum = _apply_blocks(self.frequency_blocks(size), torch.fft.rfft2(x))
        out = torch.fft.irfft2(spectrum, s=size)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Exact operator norm at ``input_shape``: the largest singular value over the
        frequency blocks, computed in float64."""
        shape = check_batch_shape(input_shape, (4,), self.in_channels, "CayleyConv2d")
        check_finite(self.weight.detach(), "CayleyConv2d.weight")
        with torch.no_grad():
            spectrum = torch.fft.rfft2(self.weight.double(), s=shape[2:]).permute(2, 3, 0, 1)
            blocks = cayley(spectrum, self.out_channels, self.in_channels)
            value = torch.linalg.matrix_norm(blocks, ord=2).max()
        return NormBound(value, "exact", "cayley-frequency-svd")

    def vanilla(self, input_shape=None) -> nn.Conv2d:
        """``nn.Conv2d`` with an ``H x W`` kernel and circular "same" padding, equal to this
        layer on ``H x W`` inputs (default: the last input size seen)."""
        shape = input_shape if input_shape is not None else self._last_input_shape
        if shape is None:
            raise BadInputError("CayleyConv2d: its export depends on the input size and it has "
                                "not seen an input; pass input_shape to to_vanilla or run a "
                                "forward pass first.")
        height, width = check_batch_shape(shape, (4,), self.in_channels, "CayleyConv2d")[2:]
        with torch.no_grad():
            blocks = self.frequency_blocks((height, width)).permute(2, 3, 0, 1)
            kernel = torch.fft.irfft2(blocks, s=(height, width))
            # conv2d correlates and "same" pads (n - 1) // 2 on the left: flip and shift.
            rows = ((height - 1) // 2 - torch.arange(height)) % height
            cols = ((width - 1) // 2 - torch.arange(width)) % width
            kernel = kernel[:, :, rows][:, :, :, cols]
            plain = nn.Conv2d(self.in_channels, self.out_channels, (height, width),
                              padding="same", padding_mode="circular",
                              bias=self.bias is not None, device=kernel.device,
                              dtype=kernel.dtype)
            plain.weight.copy_(kernel)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}")
