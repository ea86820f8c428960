"""1-Lipschitz building blocks, each with a checkable guarantee.

Every layer has ``lipschitz_bound(input_shape) -> NormBound`` (``input_shape``: the shape of
an input batch, ``(N, C, H, W)`` or ``(N, features)``), computed from its current weights with
guarantee ``exact`` or ``upper``, and ``vanilla(input_shape)``, used by :func:`to_vanilla` to
export a model to plain torch modules.

| layer | construction | reference |
|---|---|---|
| SLLConv2d, SLLLinear | ``x - 2 W T^{-1} relu(W^T x + b)``, Schur-test ``T`` | arXiv 2303.03169 |
| CPLConv2d, CPLLinear | ``x - (2/||W||^2) W^T relu(W x + b)`` | arXiv 2110.12690 |
| AOLConv2d, AOLLinear | ``W diag(sum_j |W^T W|_ij)^{-1/2}`` | arXiv 2208.03160 |
| SpectralConv2d, SpectralLinear | ``W / gram_bound(W)`` on the true operator | arXiv 2305.16173 |
| OrthogonalLinear, CayleyConv2d | Cayley / matrix exp / Bjorck; FFT Cayley | arXiv 2104.07167 |
| GroupSort, MaxMin, HouseholderActivation | norm-preserving activations | 1811.05381, 2108.04062 |
| L2NormPool2d, InvertibleDownsample | norm pooling, space-to-depth | |
| ZeroChannelPad, FirstChannels | channel padding / selection | |
| NormalizedLinear | unit-norm rows (last layer; NOT 1-Lipschitz as a layer) | |
| CirculantLinear, DiagonalCirculantLinear | FFT structured maps (exact/upper) | 1901.10255 |
| ToeplitzLinear | Toeplitz through a circulant embedding (upper norm) | 2109.00959 |
| OrthogonalCirculantLinear | circulant with unit-modulus spectrum (orthogonal) | arXiv 1901.10255 |
| NoiseInjection | ``x + z``, fresh noise every forward (random: no Lipschitz bound) | 1902.01148 |
"""

from lipcert.layers.activations import GroupSort, HouseholderActivation, MaxMin
from lipcert.layers.aol import AOLConv2d, AOLLinear
from lipcert.layers.channels import FirstChannels, ZeroChannelPad
from lipcert.layers.cpl import CPLConv2d, CPLLinear
from lipcert.layers.export import to_vanilla
from lipcert.layers.noise_injection import NoiseInjection
from lipcert.layers.normalized import NormalizedLinear
from lipcert.layers.orthogonal import CayleyConv2d, OrthogonalLinear
from lipcert.layers.pooling import InvertibleDownsample, L2NormPool2d
from lipcert.layers.sll import SLLConv2d, SLLLinear
from lipcert.layers.spectral import SpectralConv2d, SpectralLinear
from lipcert.layers.structured import (
    CirculantLinear,
    DiagonalCirculantLinear,
    OrthogonalCirculantLinear,
    ToeplitzLinear,
)

__all__ = [
    "SLLConv2d",
    "SLLLinear",
    "CPLConv2d",
    "CPLLinear",
    "AOLConv2d",
    "AOLLinear",
    "SpectralConv2d",
    "SpectralLinear",
    "OrthogonalLinear",
    "CayleyConv2d",
    "GroupSort",
    "MaxMin",
    "HouseholderActivation",
    "L2NormPool2d",
    "InvertibleDownsample",
    "ZeroChannelPad",
    "FirstChannels",
    "NormalizedLinear",
    "NoiseInjection",
    "to_vanilla",
    "CirculantLinear",
    "DiagonalCirculantLinear",
    "ToeplitzLinear",
    "OrthogonalCirculantLinear",
]
