"""Compact networks of structured layers: deep diagonal-circulant networks (DCNN; Araujo,
Negrevergne, Chevaleyre, Atif 2019, arXiv 1901.10255) and their Lipschitz-constrained variant.

Both recipes flatten the image (``in_channels * image_size**2`` features) and stack ``depth``
hidden layers of ``width`` units, then a head to ``num_classes`` logits:

- ``dcnn-s``: ``DiagonalCirculantLinear`` layers (one ``D C`` factor each, the paper's
  initialization) with Leaky-ReLU of slope :data:`LEAKY_SLOPE` (the paper finds a large negative
  slope makes deep DCNNs trainable, being closer to linear), and a DC head (``width`` ->
  ``num_classes``: truncation of one ``width`` DC). Unconstrained: its bound is the product of
  the layers' bounds (``upper``), from :mod:`lipcert.bounds`.
- ``dcnn-lip-s``: 1-Lipschitz up to the last layer. The first layer is a normalized DC layer
  (each factor divided by its exact norm, so norm <= 1; it maps the image to ``width``), the
  others are :class:`~lipcert.layers.OrthogonalCirculantLinear` (orthogonal), all followed by
  ``MaxMin`` (gradient-norm preserving). The head is a ``NormalizedLinear`` (unit-norm rows,
  certified with its rows pairwise) as in the other Lipschitz recipes: on digits (5 epochs,
  margin-ce at eps 0.5) it certified 0.22 at radius 0.5 where a normalized DC head (whole
  network 1-Lipschitz) certified nothing.

A DC layer has ``3 n`` weights (``c``, ``d``, bias): ``dcnn-s`` on MNIST with the defaults
(``width=784, depth=2``) has ``2 * 3 * 784 + (784 + 20) = 5508`` weights.

:func:`structured_mlp` is the shared layout (used by both recipes and by
``benchmarks/structured.py`` for the dense, Toeplitz and low-rank peers).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers import (
    DiagonalCirculantLinear,
    MaxMin,
    NormalizedLinear,
    OrthogonalCirculantLinear,
)

__all__ = ["LEAKY_SLOPE", "structured_mlp", "dcnn_network", "dcnn_lip_network"]

LEAKY_SLOPE = 0.5
"""Negative slope of the Leaky-ReLU in ``dcnn-s``. On mnist-5k (10 epochs, Adam lr 0.01) a
depth-10 DCNN reached 0.959 test accuracy with slope 0.5, 0.699 with 0.3 and 0.876 with 0.1,
while depth 2 and 5 moved by about one point (0.944 / 0.952 at 0.5, 0.956 / 0.957 at 0.3)."""

LayerFactory = Callable[[int, int], nn.Module]


def structured_mlp(
    *, features: int, width: int, depth: int, num_classes: int,
    first: LayerFactory, hidden: LayerFactory, head: LayerFactory,
    activation: Callable[[], nn.Module],
) -> nn.Sequential:
    """``Flatten, first(features, width), act, [hidden(width, width), act] * (depth - 1),
    head(width, num_classes)``."""
    layers: list[nn.Module] = [nn.Flatten(), first(features, width), activation()]
    for _ in range(depth - 1):
        layers += [hidden(width, width), activation()]
    layers.append(head(width, num_classes))
    return nn.Sequential(*layers)


def _features(in_channels: int, image_size: int) -> int:
    return in_channels * image_size * image_size


def dcnn_network(*, in_channels: int, image_size: int, num_classes: int, width: int,
                 depth: int) -> nn.Sequential:
    """``dcnn-s``: ``depth`` diagonal-circulant layers of ``width`` units with Leaky-ReLU and a
    DC head (arXiv 1901.10255); see the module docstring."""
    return structured_mlp(
        features=_features(in_channels, image_size), width=width, depth=depth,
        num_classes=num_classes, first=DiagonalCirculantLinear, hidden=DiagonalCirculantLinear,
        head=DiagonalCirculantLinear, activation=lambda: nn.LeakyReLU(LEAKY_SLOPE))


def dcnn_lip_network(*, in_channels: int, image_size: int, num_classes: int, width: int,
                     depth: int) -> nn.Sequential:
    """``dcnn-lip-s``: normalized DC input layer, orthogonal circulant hidden layers, MaxMin,
    ``NormalizedLinear`` head; 1-Lipschitz up to the head (module docstring)."""
    if width % 2:
        raise BadInputError(
            f"dcnn-lip-s: width={width} must be even (MaxMin sorts pairs of units).")
    return structured_mlp(
        features=_features(in_channels, image_size), width=width, depth=depth,
        num_classes=num_classes,
        first=lambda i, o: DiagonalCirculantLinear(i, o, normalize=True),
        hidden=lambda i, o: OrthogonalCirculantLinear(o),
        head=NormalizedLinear, activation=MaxMin)
