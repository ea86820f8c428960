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


NO_NOISE = "none"
"""The ``noise`` argument of :func:`small_cnn` for a model without noise injection."""


def small_cnn(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: int,
    depth: int,
    dense_width: int,
    dense_depth: int,
    noise: str = NO_NOISE,
) -> nn.Sequential:
    """``cnn-s``: a plain small CNN for the randomized-defense experiments (adversarial
    training, noise injection, RAT; arXiv 1902.01148, 1903.10219, 2012.02632), CPU-sized.

    ``depth`` blocks of conv 3x3 (padding 1, ``width * 2**level`` channels), ReLU, max-pool 2x2;
    then ``dense_depth`` hidden dense layers of ``dense_width`` units with ReLU and a final
    linear layer. Defaults (``width=32, depth=2, dense_width=128, dense_depth=1``) on MNIST:
    conv 32, pool, conv 64, pool, linear 128, linear 10.

    ``noise`` (``"LAW:SIGMA"``, e.g. ``"gaussian:0.25"``, or ``"none"``) puts a
    :class:`lipcert.layers.NoiseInjection` at the input (index 0 of the Sequential; an
    ``nn.Identity`` holds that slot without noise, so both variants have the same weights and,
    from the same seed, the same initial values).
    No Lipschitz guarantee: without noise its bound comes from :mod:`lipcert.bounds`.
    """
    from lipcert.layers.noise_injection import NoiseInjection
    from lipcert.noise import parse_noise_spec

    if not isinstance(noise, str):
        raise BadInputError(f"cnn-s: noise must be 'none' or 'LAW:SIGMA', got {noise!r}.")
    spec = None if noise.strip().lower() == NO_NOISE else parse_noise_spec(noise)
    layers: list[nn.Module] = [nn.Identity()]
    side, channels = image_size, in_channels
    for level in range(depth):
        if side // 2 < 1:
            raise BadInputError(
                f"cnn-s: image_size={image_size} is too small for depth={depth} 2x2 poolings; "
                f"use image_size >= {2 ** depth} or a smaller depth."
            )
        out = width * 2**level
        layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels, side = out, side // 2
    layers.append(nn.Flatten())
    features = channels * side * side
    for _ in range(dense_depth):
        layers += [nn.Linear(features, dense_width), nn.ReLU()]
        features = dense_width
    layers.append(nn.Linear(features, num_classes))
    if spec is not None:  # created last: the weights are those of the noise-free recipe
        layers[0] = NoiseInjection(*spec)
    return nn.Sequential(*layers)
