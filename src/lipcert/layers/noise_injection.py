"""Noise injection: a layer that adds fresh random noise at every forward pass.

Pinot, Meunier, Araujo, Kashima, Yger, Gouy-Pailler, Atif 2019, "Theoretical evidence for
adversarial robustness through randomization" (arXiv 1902.01148): noise from the exponential
family injected into a network makes it a probabilistic mapping whose output law moves little
(in Renyi divergence) when the input moves, with a certified radius that grows with the noise
and shrinks with the Lipschitz constant of the layers BEFORE the noise
(:func:`lipcert.certify.noise_injection_radii`). Combined with adversarial training it is
RAT (Araujo et al., arXiv 1903.10219).

The noise is the defense, so it is drawn in training AND in eval mode; only the
:meth:`NoiseInjection.noise_free` context manager (or :func:`noise_free` for a whole model)
switches it off, for diagnostics. A random map has no deterministic Lipschitz constant:
:func:`lipcert.bounds.lipschitz_bound` refuses a model containing this layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lipcert.errors import BadInputError, UnsupportedLayerError
from lipcert.noise import check_noise, law_scale, sample_noise

__all__ = ["NoiseInjection", "noise_free", "noise_layers", "reseed_noise_layers"]


class NoiseInjection(nn.Module):
    """``x -> x + z`` with ``z`` i.i.d. per coordinate, redrawn at every forward pass.

    Args:
        law: ``"gaussian"``, ``"laplace"`` or ``"uniform"`` (see :mod:`lipcert.noise`).
        sigma: the per-coordinate STANDARD DEVIATION of the noise, for every law (Laplace
            scale ``b = sigma / sqrt(2)``, uniform half-width ``a = sigma * sqrt(3)``).
        seed: seeds the layer's own generator (one per device, created on first use there);
            None draws that seed from torch's global generator at construction, so
            ``torch.manual_seed`` before building the model makes the noise reproducible.

    The layer has no parameters and no buffers (its state_dict is empty): inserting it into a
    model does not change which weights a checkpoint holds.
    """

    def __init__(self, law: str = "gaussian", sigma: float = 0.25, seed: int | None = None):
        super().__init__()
        self.law, self.sigma = check_noise(law, sigma)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadInputError(f"NoiseInjection: seed must be an integer or None, got {seed!r}.")
        self.seed = seed
        self.enabled = True
        self._generators: dict[str, torch.Generator] = {}

    @property
    def scale(self) -> float:
        """The law's own scale: sigma (Gaussian), b (Laplace) or the half-width a (uniform)."""
        return law_scale(self.law, self.sigma)

    def manual_seed(self, seed: int) -> NoiseInjection:
        """Restart the noise stream from ``seed`` on every device; returns self."""
        self.seed = int(seed)
        self._generators.clear()
        self.__dict__.pop("_stream_seed", None)
        return self

    def generator(self, device: torch.device) -> torch.Generator:
        """The layer's generator on ``device`` (created from ``seed`` on first use)."""
        key = str(device)
        if key not in self._generators:
            seed = getattr(self, "_stream_seed", self.seed)
            self._generators[key] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[key]

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if not x.is_floating_point():
            raise BadInputError(f"NoiseInjection needs a floating-point input, got {x.dtype}.")
        noise = sample_noise(x.shape, self.law, self.sigma, generator=self.generator(x.device),
                             device=x.device, dtype=x.dtype)
        return x + noise

    @contextlib.contextmanager
    def noise_free(self) -> Iterator[NoiseInjection]:
        """Within the block the layer is the identity (diagnostics only: the noise-free
        model is NOT the defended model, and results on it say nothing about the defense)."""
        previous = self.enabled
        self.enabled = False
        try:
            yield self
        finally:
            self.enabled = previous

    def lipschitz_bound(self, input_shape: torch.Size):
        raise UnsupportedLayerError(
            f"NoiseInjection({self.law}, sigma={self.sigma:g}) is a random map with no "
            "deterministic Lipschitz certificate. Certify the noisy model with "
            "lipcert.certify.noise_injection_radii (it bounds the part before the noise), or "
            "certify a noise-free model with randomized smoothing."
        )

    def vanilla(self, input_shape: torch.Size) -> NoiseInjection:
        """Export keeps the layer itself (it is already plain torch)."""
        return self

    def extra_repr(self) -> str:
        return f"law={self.law!r}, sigma={self.sigma:g}, seed={self.seed}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_generators"] = {}  # generators do not pickle or deep-copy; recreated from seed
        return state


def noise_layers(model: nn.Module) -> list[tuple[str, NoiseInjection]]:
    """The ``(path, layer)`` of every :class:`NoiseInjection` inside ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, NoiseInjection)]


@contextlib.contextmanager
def noise_free(model: nn.Module) -> Iterator[nn.Module]:
    """Switch off every :class:`NoiseInjection` of ``model`` within the block (diagnostics)."""
    with contextlib.ExitStack() as stack:
        for _, layer in noise_layers(model):
            stack.enter_context(layer.noise_free())
        yield model



def reseed_noise_layers(model: nn.Module, *keys: int) -> None:
    """Restart every :class:`NoiseInjection` of ``model`` from a seed derived from its own
    seed, its position and ``keys`` (e.g. epoch and step), so that a resumed training run draws
    exactly the noise of an uninterrupted one."""
    import numpy as np

    for index, (_, layer) in enumerate(noise_layers(model)):
        state = np.random.SeedSequence([layer.seed & 0xFFFFFFFFFFFFFFFF, index,
                                        *[int(k) for k in keys]])
        stream = int(state.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)
        for generator in layer._generators.values():
            generator.manual_seed(stream)
        layer._stream_seed = stream
