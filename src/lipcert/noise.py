"""Noise laws shared by randomized smoothing, noise augmentation and noise injection.

Every law is parametrized by its per-coordinate STANDARD DEVIATION ``sigma`` (in input units,
pixels in [0, 1]), so different laws compare at equal noise energy (Yang et al. 2020,
arXiv 2002.08118, use the same convention):

- ``"gaussian"``: N(0, sigma^2) per coordinate (Cohen et al. 2019, arXiv 1902.02918);
- ``"laplace"``: density proportional to exp(-|z| / b) with scale ``b = sigma / sqrt(2)``
  (Teng et al. 2020);
- ``"uniform"``: uniform on ``[-a, a]`` with ``a = sigma * sqrt(3)``.

Noise is drawn on the requested device from a ``torch.Generator`` living on that device, so it
never makes a host round trip and every draw is reproducible from its generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lipcert.errors import BadInputError

NOISE_LAWS: tuple[str, ...] = ("gaussian", "laplace", "uniform")

__all__ = ["NOISE_LAWS", "check_noise", "parse_noise_spec", "sample_noise", "law_scale"]


def check_noise(law: str, sigma: float) -> tuple[str, float]:
    """Validate a noise law and standard deviation; return ``(law, float(sigma))``.

    Raises :class:`BadInputError` for an unknown law, a ``sigma`` that is not a positive
    finite real number (booleans are refused explicitly).
    """
    if not isinstance(law, str) or law.lower() not in NOISE_LAWS:
        raise BadInputError(
            f"Unknown noise law {law!r}; use one of {', '.join(NOISE_LAWS)}."
        )
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        if torch.is_tensor(sigma) and sigma.numel() == 1 and not sigma.dtype == torch.bool:
            sigma = float(sigma)
        else:
            raise BadInputError(
                f"Noise sigma must be a positive real number (the standard deviation), "
                f"got {sigma!r}."
            )
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma <= 0.0:
        raise BadInputError(
            f"Noise sigma must be a positive finite standard deviation, got {sigma!r}; "
            "pixels are in [0, 1], so typical values are 0.12 to 1.0."
        )
    return law.lower(), sigma


def parse_noise_spec(spec: str) -> tuple[str, float]:
    """Parse ``"LAW:SIGMA"`` (e.g. ``"gaussian:0.25"``) into a checked ``(law, sigma)``."""
    form = f"the form LAW:SIGMA with LAW one of {', '.join(NOISE_LAWS)}, e.g. 'gaussian:0.25'"
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise BadInputError(f"Noise spec {spec!r} is not of {form}.")
    law, _, value = spec.partition(":")
    try:
        sigma = float(value.strip())
    except ValueError:
        raise BadInputError(
            f"Noise spec {spec!r}: {value!r} is not a number; use {form}."
        ) from None
    if law.strip().lower() not in NOISE_LAWS:
        raise BadInputError(f"Noise spec {spec!r}: unknown law {law!r}; use {form}.")
    return check_noise(law.strip(), sigma)


def law_scale(law: str, sigma: float) -> float:
    """The law's own scale parameter for standard deviation ``sigma``.

    Gaussian: ``sigma``; Laplace: ``b = sigma / sqrt(2)``; uniform: half-width
    ``a = sigma sqrt(3)``.
    """
    law, sigma = check_noise(law, sigma)
    if law == "gaussian":
        return sigma
    if law == "laplace":
        return sigma / math.sqrt(2.0)
    return sigma * math.sqrt(3.0)


def sample_noise(
    shape: Sequence[int] | torch.Size,
    law: str,
    sigma: float,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw a tensor of i.i.d. noise with standard deviation ``sigma`` per coordinate.

    ``generator`` must live on ``device`` (default: the generator's device); the draw happens
    there, so the noise never leaves that device. The result is a deterministic function of the
    generator state, the shape, law, sigma and dtype.
    """
    law, sigma = check_noise(law, sigma)
    if not isinstance(generator, torch.Generator):
        raise BadInputError(
            f"sample_noise needs a torch.Generator (got {type(generator).__name__}); "
            "create one with torch.Generator(device).manual_seed(seed)."
        )
    device = torch.device(generator.device if device is None else device)
    if device.type != generator.device.type:
        raise BadInputError(
            f"sample_noise: the generator is on {generator.device} but the noise is requested "
            f"on {device}; create the generator on the data device."
        )
    if not dtype.is_floating_point:
        raise BadInputError(f"sample_noise: dtype must be floating point, got {dtype}.")
    shape = tuple(int(s) for s in shape)
    # float16/bfloat16 have 2^8-2^11 uniform levels: the law would be far off (a bfloat16
    # Laplace draw had std 1.7 for sigma 0.5). Draw in float32, cast the result.
    work = dtype if torch.finfo(dtype).bits >= 32 else torch.float32
    if law == "gaussian":
        out = torch.randn(shape, generator=generator, device=device, dtype=work)
        return out.mul_(sigma).to(dtype)
    # Uniform in (0, 1) drawn on the device, then transformed.
    u = torch.rand(shape, generator=generator, device=device, dtype=work)
    if law == "uniform":
        a = sigma * math.sqrt(3.0)
        return u.mul_(2.0 * a).sub_(a).to(dtype)
    # Laplace by inversion: with v = u - 1/2 in [-1/2, 1/2),
    # z = -b sign(v) log(1 - 2|v|); clamp keeps log finite when |v| = 1/2 exactly.
    b = sigma / math.sqrt(2.0)
    v = u.sub_(0.5)
    tiny = torch.finfo(work).tiny
    mag = torch.log1p(-2.0 * v.abs()).clamp_(min=math.log(tiny)).neg_()
    return mag.mul_(torch.sign(v)).mul_(b).to(dtype)


def check_certifiable_dtype(dtype: torch.dtype, what: str) -> None:
    """Refuse float16/bfloat16 where a randomized certificate is computed: noise on a grid of
    a few hundred values lets a base classifier tell noisy copies of x from those of a point
    next to it (a bfloat16 Laplace input got an l1 radius of 3.14 while the smoothed
    prediction changed 0.01 away). Float32 and float64 have the same flaw at their own
    resolution (Voracek and Hein 2023, arXiv 2210.03424); it needs a base classifier built to
    exploit the noise grid."""
    if dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        raise BadInputError(f"{what} is {dtype}; randomized certificates need float32 or "
                            "float64 inputs (half-precision noise takes too few values).")
