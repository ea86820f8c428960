"""CPU-sized 1-Lipschitz networks in the layout of the SLL paper's models (arXiv 2303.03169).

Every network is a ``nn.Sequential``:

1. ``InvertibleDownsample`` (space-to-depth by 2: an orthogonal map, norm preserving), so the
   convolutions run on ``image_size / 2`` squares, which keeps the recipes CPU-sized;
2. the convolutional stage of ``depth`` blocks on ``width`` channels;
3. ``L2NormPool2d`` over 2x2 windows (1-Lipschitz: disjoint windows, each a Euclidean norm),
   down to ``image_size / 4``, and ``Flatten`` (``sll-m`` instead downsamples again by
   space-to-depth and runs a second stage of ``depth`` blocks on ``4 * width`` channels);
4. the dense stage of ``dense_depth`` blocks;
5. ``NormalizedLinear`` to ``num_classes`` logits (unit-norm rows; not 1-Lipschitz as a
   layer: certify with its rows pairwise, as in LMT's per-class bound).

Residual families (SLL, CPL) keep their width, so the channels are zero-padded to ``width``
(``ZeroChannelPad``, an isometry) and the dense blocks act on all ``width * (image_size/4)^2``
features with ``dense_width`` hidden units. Plain families (AOL, spectral) map channels with
their convolutions and alternate with ``MaxMin`` (gradient-norm preserving). Each module before
the last layer is 1-Lipschitz from its construction (CPL in eval mode, where its normalizer is
a guaranteed upper bound) and reports it through ``lipschitz_bound(input_shape)``, so the
network up to the last layer is 1-Lipschitz. Compared with the SLL paper's models (full
resolution, 4x4 average pooling scaled by 4), the space-to-depth stem and the 2x2 norm
pooling cut the convolution cost by four, which is what makes them CPU-sized.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers import (
    AOLConv2d,
    AOLLinear,
    CPLConv2d,
    CPLLinear,
    InvertibleDownsample,
    L2NormPool2d,
    MaxMin,
    NormalizedLinear,
    SLLConv2d,
    SLLLinear,
    SpectralConv2d,
    SpectralLinear,
    ZeroChannelPad,
)

DOWNSAMPLE = 4
"""The image side shrinks by this factor: 2 in the stem, 2 in the pooling."""


def _check_sizes(recipe: str, in_channels: int, image_size: int, width: int,
                 residual: bool) -> None:
    if image_size % DOWNSAMPLE:
        raise BadInputError(
            f"{recipe}: image_size must be a multiple of {DOWNSAMPLE} (the stem halves the "
            f"side, the pooling halves it again), got {image_size}; pad or crop the images "
            "(28, 32 and 8 work)."
        )
    if residual and width < 4 * in_channels:
        raise BadInputError(
            f"{recipe}: width={width} is below the {4 * in_channels} channels that the stem "
            f"makes from {in_channels} input channels; use width >= {4 * in_channels}."
        )


def _residual_network(
    recipe: str,
    conv_block: Callable[[int, int], nn.Module],
    dense_block: Callable[[int, int], nn.Module],
    *, in_channels: int, image_size: int, num_classes: int,
    width: int, depth: int, dense_width: int, dense_depth: int, staged: bool = False,
) -> nn.Sequential:
    """``staged=False``: one convolutional stage, then ``L2NormPool2d``. ``staged=True``: a
    second ``InvertibleDownsample`` instead of the pooling and a second stage of ``depth``
    blocks on its ``4 * width`` channels, so nothing is pooled away (every map up to the
    last layer is orthogonal or a 1-Lipschitz residual block)."""
    _check_sizes(recipe, in_channels, image_size, width, residual=True)
    if staged:
        second: list[nn.Module] = [InvertibleDownsample(2),
                                   *(conv_block(4 * width, 4 * width) for _ in range(depth))]
        features = 4 * width * (image_size // DOWNSAMPLE) ** 2
    else:
        second, features = [L2NormPool2d(2)], width * (image_size // DOWNSAMPLE) ** 2
    return nn.Sequential(
        InvertibleDownsample(2),
        ZeroChannelPad(width),
        *(conv_block(width, width) for _ in range(depth)),
        *second,
        nn.Flatten(),
        *(dense_block(features, dense_width) for _ in range(dense_depth)),
        NormalizedLinear(features, num_classes),
    )


def sll_network(**args: int) -> nn.Sequential:
    """``sll-s``: SLL conv and dense blocks (Araujo et al. 2023, arXiv 2303.03169); each block
    ``x - 2 W T^{-1} relu(W^T x + b)`` is 1-Lipschitz by the paper's Theorem 3."""
    return _residual_network("sll-s", SLLConv2d, SLLLinear, **args)


def sll_staged_network(**args: int) -> nn.Sequential:
    """``sll-m``: SLL blocks (arXiv 2303.03169) in two stages, as in the strided stages of
    orthogonium's StagedCNN (arXiv 2501.07930) but with space-to-depth between them:
    ``depth`` conv blocks on ``width`` channels at ``image_size / 2``, ``depth`` on
    ``4 * width`` channels at ``image_size / 4``, then the dense blocks on all
    ``4 * width * (image_size / 4)^2`` features."""
    return _residual_network("sll-m", SLLConv2d, SLLLinear, staged=True, **args)


def cpl_network(**args: int) -> nn.Sequential:
    """``cpl-s``: convex potential blocks (Meunier et al. 2022, arXiv 2110.12690) in the same
    layout; 1-Lipschitz in eval mode, where ``||W||`` is a guaranteed upper bound."""
    return _residual_network("cpl-s", CPLConv2d, CPLLinear, **args)


def _plain_network(
    recipe: str,
    conv: Callable[[int, int, int], nn.Module],
    dense: Callable[[int, int], nn.Module],
    *, in_channels: int, image_size: int, num_classes: int,
    width: int, depth: int, dense_width: int, dense_depth: int,
) -> nn.Sequential:
    """``conv(in_channels, out_channels, side)`` builds a 3x3 'same' convolution for
    ``side x side`` inputs; ``dense(in_features, out_features)`` a dense layer."""
    _check_sizes(recipe, in_channels, image_size, width, residual=False)
    if width % 2 or dense_width % 2:
        raise BadInputError(
            f"{recipe}: width={width} and dense_width={dense_width} must be even (MaxMin sorts "
            "channel pairs)."
        )
    side = image_size // 2
    layers: list[nn.Module] = [InvertibleDownsample(2)]
    channels = 4 * in_channels
    for _ in range(depth):
        layers += [conv(channels, width, side), MaxMin()]
        channels = width
    layers += [L2NormPool2d(2), nn.Flatten()]
    features = channels * (image_size // DOWNSAMPLE) ** 2
    for _ in range(dense_depth):
        layers += [dense(features, dense_width), MaxMin()]
        features = dense_width
    layers.append(NormalizedLinear(features, num_classes))
    return nn.Sequential(*layers)


def aol_network(**args: int) -> nn.Sequential:
    """``aol-s``: AOL convolutions and dense layers (Prach & Lampert 2022, arXiv 2208.03160),
    each rescaled by the row sums of ``|W^T W|`` to operator norm <= 1, with ``MaxMin``."""
    return _plain_network(
        "aol-s",
        lambda cin, cout, side: AOLConv2d(cin, cout, 3, padding=1),
        AOLLinear,
        **args,
    )


def spectral_network(**args: int) -> nn.Sequential:
    """``spectral-s``: convolutions and dense layers divided by a guaranteed upper bound on
    their operator norm (Gram iteration, for the input size each layer sees), with ``MaxMin``."""
    return _plain_network(
        "spectral-s",
        lambda cin, cout, side: SpectralConv2d(cin, cout, 3, padding=1, input_size=(side, side)),
        SpectralLinear,
        **args,
    )
