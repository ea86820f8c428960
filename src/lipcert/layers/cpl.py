"""Convex potential layers (CPL; Meunier, Delattre, Araujo, Allauzen, ICML 2022,
arXiv 2110.12690).

``y = x - (2 / sigma^2) W^T relu(W x + b)``, the gradient step of a convex potential; it is
1-Lipschitz whenever ``sigma >= ||W||`` (module :mod:`lipcert.layers.residual`). Here ``W`` is
the stored ``weight`` (``inner x features``, or an ``inner x channels x k x k`` kernel applied
with ``padding = k // 2``).

- **Training mode** (cheap, not guaranteed): ``sigma`` is one power-iteration step per forward
  on the actual operator, from a vector kept in the buffer ``power_vector`` (restarted, with
  a few warm-up steps, when the input size changes). Power iteration approaches ``||W||``
  from below, so a training-mode forward may be slightly more than 1-Lipschitz.
- **Eval mode** (guaranteed): ``sigma`` is a guaranteed upper bound on ``||W||`` from
  lipcert.linalg (Gram iteration for dense layers; ``conv_norm(method="auto")`` at the
  input size seen for convolutions), computed once per input size and cached together with
  a copy of the weight it was computed from; any change of the weight (optimizer step,
  ``load_state_dict``, assignment through ``.data``) triggers a recomputation.

``lipschitz_bound`` describes the eval-mode layer: certify in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.errors import BadInputError
from lipcert.layers._schur import safe_reciprocal
from lipcert.layers.residual import ResidualLayer
from lipcert.linalg import NormBound, conv_norm, dense_norm

__all__ = ["CPLLinear", "CPLConv2d", "POWER_WARMUP_STEPS"]

POWER_WARMUP_STEPS = 10


class _CPL(ResidualLayer):
    """CPL layer; dense when ``kernel_size`` is None."""

    def __init__(self, features: int, inner: int, kernel_size: int | None,
                 generator: torch.Generator | None = None, power_seed: int = 0) -> None:
        super().__init__(features, inner, kernel_size, generator)
        self.power_seed = int(power_seed)
        self.register_buffer("power_vector", torch.zeros(0))
        self._certified_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._last_input_shape: tuple[int, ...] | None = None
        self._training_sigma: dict[tuple, torch.Tensor] = {}

    def _vector_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (1, self.features, *input_shape[2:])

    def _next_power_vector(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """The power vector after the next training-mode step (the buffer is not changed)."""
        shape = self._vector_shape(input_shape)
        with torch.no_grad():
            steps = 1
            vector = self.power_vector
            if tuple(vector.shape) != shape:
                generator = torch.Generator(device=self.weight.device)
                generator.manual_seed(self.power_seed)
                vector = torch.randn(shape, generator=generator, dtype=self.weight.dtype,
                                     device=self.weight.device)
                steps = POWER_WARMUP_STEPS
            for _ in range(steps):
                vector = self.apply_adjoint(self.apply_map(vector))
                vector = vector * safe_reciprocal(vector.norm())
        return vector

    def _power_sigma(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """One power-iteration step (more after a restart); differentiable in the weight."""
        vector = self._next_power_vector(input_shape)
        with torch.no_grad():
            if self.power_vector.shape != vector.shape:
                self.power_vector = vector.clone()
            else:
                self.power_vector.copy_(vector)
        sigma = self.apply_map(vector).norm()
        self._sigmas_seen()[tuple(input_shape[2:])] = sigma.detach()
        return sigma

    def _sigmas_seen(self) -> dict[tuple, torch.Tensor]:
        """The ``sigma`` of the last training-mode forward, per input size."""
        if not hasattr(self, "_training_sigma"):  # layers pickled before this attribute
            self._training_sigma = {}
        return self._training_sigma

    def _training_normalizer(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """The smallest ``sigma`` a training-mode forward at this size used last or will use
        next (power iteration approaches ``||W||`` from below: not a guaranteed bound)."""
        with torch.no_grad():
            sigma = self.apply_map(self._next_power_vector(input_shape)).norm()
        last = self._sigmas_seen().get(tuple(input_shape[2:]))
        return sigma if last is None else torch.minimum(sigma, last.to(sigma))

    def upper_norm(self, input_shape) -> NormBound:
        """A fresh guaranteed upper bound on ``||W||`` for inputs of ``input_shape``."""
        shape = self.check_input_shape(input_shape)
        self.check_weights()
        weight = self.weight.detach()
        if self.is_conv:
            bound = conv_norm(weight, shape[2:], padding=self.padding, method="auto")
        else:
            bound = dense_norm(weight, method="gram")
        return bound.require_sound(type(self).__name__)

    def certified_norm(self, input_shape) -> torch.Tensor:
        """The eval-mode ``sigma`` (detached): :meth:`upper_norm`, cached per input size and
        recomputed whenever the weight differs from the one it was computed for."""
        shape = self.check_input_shape(input_shape)
        weight = self.weight.detach()
        key = (shape[2:], weight.dtype, weight.device)
        cached = self._certified_cache.get(key)
        if cached is None or cached[0].shape != weight.shape or not torch.equal(cached[0],
                                                                                  weight):
            cached = (weight.clone(), self.upper_norm(shape).value.detach())
            self._certified_cache[key] = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = self.check_input_shape(x.shape)
        self._last_input_shape = shape
        sigma = self._power_sigma(shape) if self.training else self.certified_norm(shape)
        return self.residual(x, safe_reciprocal(sigma * sigma))

    def lipschitz_bound(self, input_shape) -> NormBound:
        """Upper bound ``max(1, 2 (u / sigma)^2 - 1)``, where ``u`` is a fresh guaranteed upper
        bound on ``||W||`` and ``sigma`` the normalizer the forward uses for this input size.
        In eval mode the two coincide unless the cache were stale, so the value is 1; it is
        recomputed rather than assumed. In training mode ``sigma`` is a power-iteration
        estimate (the smaller of the last forward's and the next one's), which lies below
        ``||W||``, so the bound may exceed 1 there: certify in eval mode."""
        fresh = self.upper_norm(input_shape)
        if self.training:
            used = self._training_normalizer(tuple(input_shape)).double()
        else:
            used = self.certified_norm(input_shape).double()
        ratio = fresh.value.detach().double() * safe_reciprocal(used)
        value = torch.clamp(2 * ratio * ratio - 1, min=1.0)
        return NormBound(value, "upper", f"cpl-{fresh.method}")

    def vanilla(self, input_shape=None) -> nn.Module:
        """Plain-torch copy of the eval-mode layer, ``sigma`` recomputed now. A convolution is
        exported for the input size ``input_shape`` (default: the last input it saw)."""
        shape = input_shape if input_shape is not None else self._last_input_shape
        if shape is None:
            if self.is_conv:
                raise BadInputError(
                    f"{type(self).__name__}: its normalization depends on the input size and "
                    "it has not seen an input; pass input_shape to to_vanilla or run a forward "
                    "pass first.")
            shape = (1, self.features)
        with torch.no_grad():
            sigma = self.upper_norm(shape).value
            return self.residual_vanilla(safe_reciprocal(sigma * sigma))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The power vector's shape follows the input size; adopt the stored one.
        stored = state_dict.get(f"{prefix}power_vector")
        if stored is not None and stored.shape != self.power_vector.shape:
            self.power_vector = self.power_vector.new_empty(stored.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CPLLinear(_CPL):
    """Dense CPL layer on ``features`` with hidden size ``inner_features``.

    Args:
        features: input = output size.
        inner_features: rows of ``W``.
        generator: optional torch.Generator for the initialization.
        power_seed: seed of the power-iteration start vector.
    """

    def __init__(self, features: int, inner_features: int,
                 generator: torch.Generator | None = None, power_seed: int = 0) -> None:
        super().__init__(features, inner_features, None, generator, power_seed)


class CPLConv2d(_CPL):
    """Convolutional CPL layer (stride 1, zero padding ``kernel_size // 2``, odd kernel).

    In eval mode it is 1-Lipschitz at every input size (its normalizer is computed per size).

    Args:
        channels: input = output channels.
        inner_channels: output channels of ``W``.
        kernel_size: positive odd integer.
        generator: optional torch.Generator for the initialization.
        power_seed: seed of the power-iteration start vector.
    """

    def __init__(self, channels: int, inner_channels: int, kernel_size: int = 3,
                 generator: torch.Generator | None = None, power_seed: int = 0) -> None:
        super().__init__(channels, inner_channels, kernel_size, generator, power_seed)
