"""Compact structured layers: circulant, diagonal-circulant (DC) and Toeplitz, computed with FFTs.

Deep diagonal-circulant networks (Araujo, Negrevergne, Chevaleyre, Atif 2019, arXiv 1901.10255)
replace a dense ``n x n`` layer by a product of diagonal and circulant factors: O(n) weights and
O(n log n) compute. Toeplitz-family layers follow the thesis arXiv 2109.00959. Conventions
(first column of ``circ(c)``; the Toeplitz embedding) are those of :mod:`lipcert.linalg.structured`.

- ``CirculantLinear(n)``: ``circ(c) x``; ``2 n`` weights; bound ``exact``, ``max |FFT(c)|``.
- ``DiagonalCirculantLinear(i, o, depth)``: ``P_o D_k C_k ... D_1 C_1 P_i x``;
  ``(2 depth - 1) N + 2 o`` weights (``N = max(i, o)``); bound ``exact`` for a square layer
  of one factor with constant ``|d|``, else ``upper``: the product of ``max|d_j| ||C_j||``.
- ``ToeplitzLinear(i, o)``: ``T x`` (``o x i``); ``i + 2 o - 1`` weights; bound ``upper``
  (circulant embedding).
- ``OrthogonalCirculantLinear(n)``: ``circ(c)`` with ``FFT(c)`` of unit modulus; ``2 n``
  weights; bound ``exact``: 1 (orthogonal).

``normalize=True`` divides the circulant and Toeplitz layers by their exact / upper norm, and each
DC factor by its own (``c_j / ||C_j||``, ``d_j / max|d_j|``), so the layer has norm at most 1
(exactly 1 for the circulant). Every layer reports the norm of its *effective* weights, so
``lipcert.bounds`` bounds networks of them, and exports to a plain ``nn.Linear`` (explicit
matrix, for sizes up to :data:`MAX_EXPLICIT_ENTRIES`) through ``vanilla`` /
:func:`lipcert.layers.to_vanilla`.
``linear_weight()`` returns that explicit matrix (for up to :data:`MAX_PAIRWISE_OUTPUTS`
outputs) for the last-layer (pairwise) certificate.

Non-square DC layers (``N = max(in, out)``): the input is zero-padded to ``N`` (``P_i``), every
factor has a kernel of length ``N``, and the first ``out`` rows are kept (``P_o``); so the last
diagonal has length ``out``. For ``out <= in`` this is the paper's code (one ``in x in`` DC,
truncated); for ``out > in`` the paper stacks ``ceil(out / in)`` blocks instead.

Initialization (the paper's, ch. 4 of arXiv 2109.00959; the public code differs): kernels
``c ~ N(0, 2 / in_features)`` for the first factor and ``N(0, 1 / N)`` for later factors of the
same layer (no activation between them, so each keeps the per-coordinate variance), diagonals
uniform on ``{-1, +1}``, biases ``N(0, 0.01^2)``. Every constructor takes a ``generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipcert.errors import BadInputError, check_finite
from lipcert.layers._schur import safe_reciprocal
from lipcert.layers._shapes import check_batch_shape, is_traced
from lipcert.layers.export import plain_linear_like
from lipcert.linalg import NormBound, circulant_norm, dense_norm, toeplitz_norm
from lipcert.linalg.structured import circulant_apply, toeplitz_apply

__all__ = [
    "CirculantLinear",
    "DiagonalCirculantLinear",
    "ToeplitzLinear",
    "OrthogonalCirculantLinear",
    "BIAS_STD",
    "MAX_EXPLICIT_ENTRIES",
    "MAX_PAIRWISE_OUTPUTS",
    "fft_size",
]

BIAS_STD = 0.01
"""Standard deviation of the bias initialization (the paper's "small" alpha')."""

MAX_EXPLICIT_ENTRIES = 2**24
"""Largest ``in * out`` for which the explicit matrix is built (export, exact norms)."""

MAX_PAIRWISE_OUTPUTS = 1000
"""Layers with more outputs are not treated as logit layers by ``linear_weight``."""

DC_BOUND_METHODS = ("auto", "product", "exact")


def fft_size(least: int) -> int:
    """The smallest ``2^a 3^b 5^c >= least`` (a size the FFT handles fast)."""
    size = max(1, least)
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1


def _check_size(value: int, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(f"{layer}: {what} must be a positive integer, got {value!r}.")
    return value


def _normal(shape: tuple[int, ...], std: float, generator, device, dtype) -> torch.Tensor:
    sample = torch.randn(shape, generator=generator, dtype=dtype or torch.get_default_dtype())
    return (sample * std).to(device)


def _signs(size: int, generator, device, dtype) -> torch.Tensor:
    bits = torch.randint(0, 2, (size,), generator=generator)
    return (2.0 * bits - 1.0).to(dtype=dtype or torch.get_default_dtype(), device=device)


class _StructuredLinear(nn.Module):
    """Base: ``forward(x) = linear_part(x) + bias`` on the last dimension of ``x``, the explicit
    matrix, the input checks and the export shared by every structured layer."""

    def __init__(self, in_features: int, out_features: int, bias: bool, device, dtype) -> None:
        super().__init__()
        layer = type(self).__name__
        self.in_features = _check_size(in_features, "in_features", layer)
        self.out_features = _check_size(out_features, "out_features", layer)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_traced(x) and x.shape[-1] != self.in_features:
            raise BadInputError(
                f"{type(self).__name__}({self.in_features} -> {self.out_features}) needs inputs "
                f"whose last dimension is {self.in_features}, got shape {tuple(x.shape)}.")
        out = self.linear_part(x)
        return out if self.bias is None else out + self.bias

    def _reference(self) -> torch.Tensor:
        return next(iter(self.parameters()))

    def explicit_matrix(self) -> torch.Tensor:
        """The explicit effective ``(out, in)`` matrix ``W`` (``forward(x) = x W^T + bias``),
        built from the images of the basis vectors; differentiable.

        Raises:
            BadInputError: more than :data:`MAX_EXPLICIT_ENTRIES` entries.
        """
        size = self.in_features * self.out_features
        if size > MAX_EXPLICIT_ENTRIES:
            raise BadInputError(
                f"{type(self).__name__}({self.in_features} -> {self.out_features}): the explicit "
                f"matrix would have {size} entries (limit {MAX_EXPLICIT_ENTRIES}); keep the "
                "structured layer (its lipschitz_bound needs no explicit matrix).")
        ref = self._reference()
        basis = torch.eye(self.in_features, dtype=ref.dtype, device=ref.device)
        return self.linear_part(basis).mT

    def linear_weight(self) -> torch.Tensor | None:
        """:meth:`explicit_matrix` for a layer that can be a classifier's last layer (at most
        :data:`MAX_PAIRWISE_OUTPUTS` outputs and :data:`MAX_EXPLICIT_ENTRIES` entries), read by
        the pairwise last-layer certificate of :mod:`lipcert.bounds`; None otherwise (the
        certificate then uses the global form), so wide hidden layers cost nothing extra."""
        if (self.out_features > MAX_PAIRWISE_OUTPUTS
                or self.in_features * self.out_features > MAX_EXPLICIT_ENTRIES):
            return None
        return self.explicit_matrix()

    def _check_bound_shape(self, input_shape) -> None:
        check_batch_shape(input_shape, (2,), self.in_features, type(self).__name__)
        for name, tensor in self.named_parameters():
            check_finite(tensor.detach(), f"{type(self).__name__}.{name}")

    def exact_norm(self) -> NormBound:
        """Spectral norm of the explicit matrix (SVD through lipcert.linalg): ``exact``."""
        bound = dense_norm(self.explicit_matrix(), method="exact")
        return NormBound(bound.value, "exact", "explicit-svd")

    def vanilla(self, input_shape=None) -> nn.Linear:
        """``nn.Linear`` holding the explicit effective matrix (and the bias), computed now."""
        with torch.no_grad():
            return plain_linear_like(self, self.explicit_matrix())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class CirculantLinear(_StructuredLinear):
    """``y = circ(c) x + b`` with first column ``c`` (``features`` weights), via rfft/irfft.

    Args:
        features: size ``n`` of input and output.
        bias: learn an additive bias.
        normalize: use ``c / ||circ(c)||`` (``exact`` norm ``max |FFT(c)|``): norm exactly 1.
        generator: torch.Generator for the initialization (``c ~ N(0, 2/n)``).

    ``lipschitz_bound`` is ``exact``: ``max_k |FFT(c_eff)_k|`` (arXiv 1901.10255).
    """

    def __init__(self, features: int, bias: bool = True, *, normalize: bool = False,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__(features, features, bias, device, dtype)
        n = self.in_features
        self.normalize = bool(normalize)
        self.kernel = nn.Parameter(_normal((n,), (2.0 / n) ** 0.5, generator, device, dtype))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(_normal((n,), BIAS_STD, generator, device, dtype))

    def effective_kernel(self) -> torch.Tensor:
        """First column of the circulant the layer applies (normalized if ``normalize``)."""
        if not self.normalize:
            return self.kernel
        return self.kernel * safe_reciprocal(circulant_norm(self.kernel).value)

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:
        return circulant_apply(self.effective_kernel(), x)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """``max |FFT(c_eff)|``: guarantee ``exact``; differentiable."""
        self._check_bound_shape(input_shape)
        return circulant_norm(self.effective_kernel())

    def extra_repr(self) -> str:
        return f"features={self.in_features}, bias={self.bias is not None}, " \
               f"normalize={self.normalize}"


class OrthogonalCirculantLinear(_StructuredLinear):
    """Orthogonal circulant ``y = circ(c_eff) x + b``: the FFT coefficients of ``c`` are divided
    by their moduli, so every eigenvalue has modulus 1 and ``circ(c_eff)`` is a real orthogonal
    matrix (exactly 1-Lipschitz, gradient-norm preserving). A zero coefficient is replaced by 1.

    Args:
        features: size ``n`` of input and output.
        bias: learn an additive bias.
        generator: torch.Generator for the initialization of ``c`` (``N(0, 1/n)``; only the
            phases of its spectrum matter).
    """

    def __init__(self, features: int, bias: bool = True, *,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__(features, features, bias, device, dtype)
        n = self.in_features
        self.kernel = nn.Parameter(_normal((n,), n ** -0.5, generator, device, dtype))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(_normal((n,), BIAS_STD, generator, device, dtype))

    def unit_spectrum(self) -> torch.Tensor:
        """``rfft(c) / |rfft(c)|`` (1 where the coefficient is 0)."""
        spectrum = torch.fft.rfft(self.kernel)
        modulus = spectrum.abs()
        positive = modulus > 0
        safe = torch.where(positive, modulus, torch.ones_like(modulus))
        return torch.where(positive, spectrum / safe, torch.ones_like(spectrum))

    def effective_kernel(self) -> torch.Tensor:
        """First column of the orthogonal circulant the layer applies."""
        return torch.fft.irfft(self.unit_spectrum(), n=self.in_features)

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:
        n = self.in_features
        return torch.fft.irfft(self.unit_spectrum() * torch.fft.rfft(x, n=n), n=n)

    def lipschitz_bound(self, input_shape) -> NormBound:
        """``max |FFT(c_eff)|`` of the effective kernel: ``exact``, 1 up to rounding."""
        self._check_bound_shape(input_shape)
        return circulant_norm(self.effective_kernel())

    def extra_repr(self) -> str:
        return f"features={self.in_features}, bias={self.bias is not None}"


class DiagonalCirculantLinear(_StructuredLinear):
    """``y = P_out D_k C_k ... D_1 C_1 P_in x + b``: ``depth`` diagonal-circulant factors
    (Araujo et al. 2019, arXiv 1901.10255) on size ``N = max(in_features, out_features)``.

    ``P_in`` zero-pads the input to ``N``, ``P_out`` keeps the first ``out_features`` rows, so
    the last diagonal ``D_k`` has length ``out_features`` and the others ``N``. Weights:
    ``depth * N`` kernel entries, ``(depth - 1) N + out`` diagonal entries and ``out`` biases,
    i.e. ``3 n`` for a square one-factor layer (the paper's count).

    Args:
        in_features, out_features: sizes of input and output.
        depth: number of ``D C`` factors.
        bias: learn an additive bias.
        normalize: divide each factor by its exact norm (``c_j / max |FFT(c_j)|`` and
            ``d_j / max |d_j|``), so the layer has norm at most 1.
        generator: torch.Generator for the paper's initialization (module docstring).

    Parameters: ``kernels`` (``depth x N``), ``diagonal0`` ... ``diagonal{depth-1}``, ``bias``.
    """

    def __init__(self, in_features: int, out_features: int, depth: int = 1, bias: bool = True,
                 *, normalize: bool = False, generator: torch.Generator | None = None,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.depth = _check_size(depth, "depth", type(self).__name__)
        self.size = max(self.in_features, self.out_features)
        self.normalize = bool(normalize)
        n = self.size
        stds = [(2.0 / self.in_features) ** 0.5] + [n ** -0.5] * (self.depth - 1)
        self.kernels = nn.Parameter(torch.stack(
            [_normal((n,), std, generator, device, dtype) for std in stds]))
        lengths = [n] * (self.depth - 1) + [self.out_features]
        # plain named parameters: an nn.ParameterList is a module that overrides __call__
        for index, length in enumerate(lengths):
            self.register_parameter(f"diagonal{index}",
                                    nn.Parameter(_signs(length, generator, device, dtype)))
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(_normal((self.out_features,), BIAS_STD, generator, device,
                                        dtype))

    @property
    def diagonals(self) -> list[torch.Tensor]:
        """The raw diagonals ``d_1 ... d_k`` (parameters ``diagonal0 ... diagonal{k-1}``)."""
        return [getattr(self, f"diagonal{index}") for index in range(self.depth)]

    def factors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The effective ``(c_j, d_j)`` of every factor, in the order they are applied."""
        pairs = []
        for kernel, diagonal in zip(self.kernels, self.diagonals, strict=True):
            if self.normalize:
                kernel = kernel * safe_reciprocal(circulant_norm(kernel).value)
                diagonal = diagonal * safe_reciprocal(diagonal.abs().amax())
            pairs.append((kernel, diagonal))
        return pairs

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x, (0, self.size - self.in_features))
        pairs = self.factors()
        for index, (kernel, diagonal) in enumerate(pairs):
            h = circulant_apply(kernel, h)
            if index == len(pairs) - 1:
                h = h[..., : self.out_features]
            h = diagonal * h
        return h

    def lipschitz_bound(self, input_shape, method: str = "auto") -> NormBound:
        """Upper bound (or exact value) of the spectral norm of the linear part.

        Args:
            input_shape: ``(N, in_features)``.
            method: ``"auto"``/``"product"``: ``prod_j max|d_j| max|FFT(c_j)|`` (differentiable),
                ``exact`` for a square one-factor layer whose ``|d|`` is constant (e.g. the
                initial +-1 signs), ``upper`` otherwise; ``"exact"``: SVD of the explicit
                matrix through lipcert.linalg (``in * out <= MAX_EXPLICIT_ENTRIES``).
        """
        self._check_bound_shape(input_shape)
        if method == "exact":
            return self.exact_norm()
        if method not in ("auto", "product"):
            raise BadInputError(f"DiagonalCirculantLinear.lipschitz_bound: unknown method "
                                f"{method!r}; choose one of {list(DC_BOUND_METHODS)}.")
        value = None
        constant_modulus = True
        for kernel, diagonal in self.factors():
            modulus = diagonal.abs()
            constant_modulus &= bool(modulus.detach().amax() == modulus.detach().amin())
            factor = modulus.amax() * circulant_norm(kernel).value
            value = factor if value is None else value * factor
        square = self.in_features == self.out_features
        exact = self.depth == 1 and square and constant_modulus
        return NormBound(value, "exact" if exact else "upper", "dc-product")

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, depth={self.depth}, size={self.size}, "
                f"normalize={self.normalize}")


class ToeplitzLinear(_StructuredLinear):
    """``y = T x + b`` with a general ``out x in`` Toeplitz ``T`` (``in + out - 1`` weights),
    applied through its circulant embedding (an FFT of size >= ``in + out - 1``).

    The weights are stored in embedding order: ``kernel = [T[:, 0], T[0, :0:-1]]`` (first
    column, then the first row reversed without its first entry); :meth:`first_col` and
    :meth:`first_row` give the scipy form.

    Args:
        in_features, out_features: sizes of input and output.
        bias: learn an additive bias.
        normalize: divide by the embedding upper bound, so the layer has norm at most 1.
        generator: torch.Generator for the initialization (entries ``N(0, 2 / in_features)``).

    ``lipschitz_bound`` is the circulant-embedding bound (``upper``; never looser than Gray's
    ``sup |f|``); :meth:`norm_estimate` gives a power-iteration lower estimate beside it.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 normalize: bool = False, generator: torch.Generator | None = None,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.normalize = bool(normalize)
        count = self.in_features + self.out_features - 1
        std = (2.0 / self.in_features) ** 0.5
        self.kernel = nn.Parameter(_normal((count,), std, generator, device, dtype))
        self.fft_size = fft_size(count)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(_normal((self.out_features,), BIAS_STD, generator, device,
                                        dtype))

    def _raw_col_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.out_features
        return self.kernel[:m], torch.cat((self.kernel[:1], self.kernel[m:].flip(0)))

    def _scale(self) -> torch.Tensor | None:
        if not self.normalize:
            return None
        return safe_reciprocal(toeplitz_norm(*self._raw_col_row(), "embedding").value)

    def first_col(self) -> torch.Tensor:
        """First column of the effective ``T`` (length ``out_features``)."""
        col = self._raw_col_row()[0]
        scale = self._scale()
        return col if scale is None else col * scale

    def first_row(self) -> torch.Tensor:
        """First row of the effective ``T`` (length ``in_features``)."""
        row = self._raw_col_row()[1]
        scale = self._scale()
        return row if scale is None else row * scale

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:
        col, row = self._raw_col_row()
        scale = self._scale()
        out = toeplitz_apply(col, row, x, size=self.fft_size)
        return out if scale is None else out * scale

    def lipschitz_bound(self, input_shape, method: str = "embedding") -> NormBound:
        """Spectral-norm bound of ``T`` by :func:`lipcert.linalg.toeplitz_norm` (default the
        circulant embedding, ``upper``; ``"exact"``, ``"gram"``, ``"trig"`` also accepted).

        Raises:
            UnsoundRequestError: ``method="power"`` (an estimate; use :meth:`norm_estimate`).
        """
        self._check_bound_shape(input_shape)
        return toeplitz_norm(self.first_col(), self.first_row(), method).require_sound(
            f"ToeplitzLinear.lipschitz_bound(method={method!r})")

    def norm_estimate(self, n_iter: int = 100, seed: int = 0) -> NormBound:
        """Power-iteration estimate of ``||T||`` with FFT mat-vecs (``estimate``: a lower bound
        up to rounding), to bracket the truth with :meth:`lipschitz_bound`."""
        return toeplitz_norm(self.first_col(), self.first_row(), "power", n_iter=n_iter,
                             seed=seed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalize={self.normalize}"
