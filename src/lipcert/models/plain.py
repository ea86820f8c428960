"""Unconstrained CNNs from the margin-training literature (no Lipschitz constraint)."""

from __future__ import annotations

from torch import nn

from lipcert.errors import BadInputError


def lmt_cnn(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: int,
    depth: int,
    dense_width: int,
    dense_depth: int,
) -> nn.Sequential:
    """Kolter & Wong's small MNIST CNN, which LMT (Tsuzuku et al. 2018, arXiv 1802.04034)
    trains with its margin loss.

    With the defaults (``width=16, depth=2, dense_width=100, dense_depth=1``) it is exactly
    conv 16 4x4 stride 2 pad 1, ReLU, conv 32 4x4 stride 2 pad 1, ReLU, flatten, linear 100,
    ReLU, linear ``num_classes``. ``depth`` stride-2 convolutions double the channels each
    time (starting at ``width``) and halve the image side (rounded down); ``dense_depth``
    hidden dense layers of ``dense_width`` units follow. No Lipschitz guarantee: its bound
    comes from :mod:`lipcert.bounds`.
    """
    side = image_size
    layers: list[nn.Module] = []
    channels = in_channels
    for level in range(depth):
        side //= 2
        if side < 1:
            raise BadInputError(
                f"lmt-mnist: image_size={image_size} is too small for depth={depth} stride-2 "
                f"convolutions (the side reaches 0 after {level + 1}); use image_size >= "
                f"{2 ** depth} or a smaller depth."
            )
        out = width * 2**level
        layers += [nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        channels = out
    layers.append(nn.Flatten())
    features = channels * side * side
    for _ in range(dense_depth):
        layers += [nn.Linear(features, dense_width), nn.ReLU()]
        features = dense_width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
