"""Randomized smoothing: Cohen's PREDICT and CERTIFY, batched over inputs, for three noise laws.

The smoothed classifier ``g(x) = argmax_c P(f(x + e) = c)`` with ``e`` drawn from a noise law
of standard deviation ``sigma`` per coordinate (:mod:`lipcert.noise`):

- ``"gaussian"``: l2 radius ``sigma * Phi^-1(pA)`` (Cohen, Rosenfeld, Kolter 2019,
  arXiv 1902.02918, Theorem 1 with ``pB = 1 - pA``);
- ``"laplace"``: l1 radius ``-b ln(2 (1 - pA))``, ``b = sigma / sqrt 2`` (Teng, Lee, Yang 2020;
  the form of Yang et al. 2020, arXiv 2002.08118);
- ``"uniform"`` on the cube ``[-a, a]^d``, ``a = sigma sqrt 3``: l1 radius ``2a (pA - 1/2)`` and
  l-infinity radius ``2a (1 - (3/2 - pA)^(1/d))`` (Yang et al. 2020).

Guarantee (CERTIFY): with probability at least ``1 - alpha`` over the noise, every input either
abstains (prediction -1, radius 0) or gets ``g``'s class with a radius such that
``g(x + delta)`` is that class for every ``||delta|| < radius``. Selection (``n0`` samples) and
estimation (``n`` samples) use independent draws. PREDICT returns a class other than ``g(x)``
with probability at most ``alpha`` (two-sided binomial test, Hung & Fithian, arXiv 1610.03944).
The theorem is about continuous noise; the noise drawn is float32/float64, and a base classifier
built to recognise that grid can break a certificate (Voracek and Hein 2023, arXiv 2210.03424;
reproduced here for uniform noise in float32). Half-precision inputs are refused for that
reason. Trained networks are not known to do this, but it is a limit of the guarantee.

Batching: the noisy copies of several inputs share forward passes and the votes are counted on
the device (``bincount``), under ``torch.inference_mode``. Each input draws its noise from its own
``torch.Generator`` seeded from ``(seed, index of the input, stream)``, in chunks of
:data:`DRAW_CHUNK` samples, so an input's draws (and its result) do not depend on which other
inputs share its batch, nor on ``batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binomtest, norm
from torch import nn

from lipcert.certify.statistics import clopper_pearson_lower
from lipcert.errors import BadInputError, check_finite
from lipcert.noise import check_certifiable_dtype, check_noise, law_scale, sample_noise

__all__ = [
    "Smoothed",
    "SmoothingResult",
    "cohen_radius",
    "smoothing_radius",
    "min_samples",
    "DRAW_CHUNK",
    "RADIUS_NORMS",
]

# Samples drawn per generator call (fixed, so draws do not depend on the batch size).
DRAW_CHUNK = 128

# The norm of each law's main radius, and every norm it certifies.
RADIUS_NORMS: dict[str, tuple[str, ...]] = {
    "gaussian": ("2",),
    "laplace": ("1",),
    "uniform": ("1", "inf"),
}

# Independent random streams of one input.
_SELECTION, _ESTIMATION, _PREDICTION = 0, 1, 2

# Relative slack on radii for float rounding in Phi^-1 / log (far below any statistical error).
_RADIUS_GUARD = 1e-9


def _radius_guard(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 0.0) * (1.0 - _RADIUS_GUARD)


def cohen_radius(p_lower, sigma: float):
    """Cohen's l2 radius ``sigma * Phi^-1(p_lower)`` for ``p_lower >= 1/2``, else 0.

    Vectorized over ``p_lower`` (scalar in, float out). Valid for every ``||delta||_2`` below it
    (arXiv 1902.02918, Theorem 1 with ``pB = 1 - pA``).
    """
    _, sigma = check_noise("gaussian", sigma)
    return smoothing_radius(p_lower, sigma, "gaussian")


def smoothing_radius(p_lower, sigma: float, law: str = "gaussian", norm_: str | None = None,
                     dim: int | None = None):
    """Certified radius of a smoothed classifier from a lower bound on its top-class probability.

    ``norm_`` defaults to the law's main norm (:data:`RADIUS_NORMS`); ``"inf"`` for the uniform
    law needs the input dimension ``dim``. Zero where ``p_lower < 1/2`` (abstention).
    """
    law, sigma = check_noise(law, sigma)
    norm_ = RADIUS_NORMS[law][0] if norm_ is None else str(norm_)
    if norm_ not in RADIUS_NORMS[law]:
        raise BadInputError(f"the {law} law certifies norms {RADIUS_NORMS[law]}, not {norm_!r}.")
    scalar = np.ndim(p_lower) == 0
    p = np.asarray(p_lower, dtype=np.float64)
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise BadInputError("p_lower must hold probabilities in [0, 1].")
    ok = p >= 0.5
    pc = np.where(ok, p, 0.5)
    if law == "gaussian":
        r = sigma * norm.ppf(pc)
    elif law == "laplace":
        b = law_scale(law, sigma)
        r = -b * np.log(2.0 * (1.0 - pc))  # +inf at pc = 1, never reached from finite samples
    else:
        a = law_scale(law, sigma)
        if norm_ == "1":
            r = 2.0 * a * (pc - 0.5)
        else:
            if dim is None or int(dim) < 1:
                raise BadInputError("the l-infinity radius of the uniform law needs dim >= 1.")
            r = 2.0 * a * -np.expm1(np.log1p(-(pc - 0.5)) / int(dim))
    r = np.where(ok, _radius_guard(r), 0.0)
    return float(r) if scalar else r


def min_samples(alpha: float) -> int:
    """The least ``n`` for which CERTIFY can certify anything: ``alpha ** (1 / n) > 1/2``."""
    return int(math.floor(math.log(alpha) / math.log(0.5))) + 1


@dataclass
class SmoothingResult:
    """Per-input outcome of :meth:`Smoothed.certify` / :meth:`Smoothed.certify_multi`.

    Attributes:
        prediction: (N,) long tensor, the certified class or -1 (abstain).
        radius: (N,) float64 tensor, the radius in norm ``norm`` (0 for abstentions).
        norm: ``"2"``, ``"1"`` or ``"inf"``: the norm of ``radius``.
        counts: (N, K) long tensor of votes of the estimation samples (for
            ``certify_multi``: under ``sigma``).
        p_lower: (N,) float64 lower confidence bounds on the top-class probability.
        radii: every certified norm -> (N,) radii (the uniform law certifies l1 and l-inf).
        law, sigma, n0, n, alpha: the settings that produced it.
        extra: further per-input tensors (``certify_multi``: ``radius_cohen``, ``p_lowers``).
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    norm: str
    counts: torch.Tensor
    p_lower: torch.Tensor
    radii: dict[str, torch.Tensor] = field(default_factory=dict)
    law: str = "gaussian"
    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.prediction.numel())

    @property
    def abstained(self) -> torch.Tensor:
        """(N,) bool: inputs where the smoothed classifier abstained."""
        return self.prediction < 0

    def certified_radii(self, labels: torch.Tensor, norm_: str | None = None) -> torch.Tensor:
        """Radius where the prediction equals ``labels``, 0 otherwise (abstentions are wrong)."""
        if not torch.is_tensor(labels) or labels.shape != self.prediction.shape:
            raise BadInputError(
                f"labels must be a tensor of shape {tuple(self.prediction.shape)}, one per input."
            )
        radius = self.radius if norm_ is None else self.radii[str(norm_)]
        correct = self.prediction.cpu() == labels.cpu().long()
        return torch.where(correct, radius.cpu(), torch.zeros((), dtype=radius.dtype))


def _stream_seed(seed: int, index: int, stream: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(stream)])
    return int(state.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise BadInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise BadInputError(f"alpha must lie in (0, 1) (the failure probability), got {alpha!r}.")
    return float(alpha)


class Smoothed:
    """The smoothed classifier of ``model`` under noise ``law`` of standard deviation ``sigma``.

    ``model`` maps a batch of raw inputs (pixels in [0, 1], any normalization inside it) to
    (batch, num_classes) logits; its vote is the argmax. Noise is added to the raw input on the
    input's device. See the module docstring for the guarantees.
    """

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                 num_classes: int, sigma: float = 0.25, law: str = "gaussian") -> None:
        if not callable(model):
            raise BadInputError(
                f"model must be a callable torch module, got {type(model).__name__}."
            )
        self.model = model
        self.num_classes = _check_int(num_classes, "num_classes", 2)
        self.law, self.sigma = check_noise(law, sigma)

    # ------------------------------------------------------------------ sampling and counting
    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() < 2 or x.shape[0] == 0:
            raise BadInputError(
                "x must be a non-empty batch tensor of shape (N, ...) (one row per input)."
            )
        if not x.dtype.is_floating_point:
            raise BadInputError(f"x must be a floating-point tensor, got {x.dtype}.")
        check_certifiable_dtype(x.dtype, "x (the inputs to smooth)")
        check_finite(x, "x (the inputs to smooth)")
        return x

    def _check_model_output(self, x: torch.Tensor) -> None:
        with torch.inference_mode():
            out = self.model(x[:1])
        if not torch.is_tensor(out) or out.shape != (1, self.num_classes):
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise BadInputError(
                f"the model must return logits of shape (batch, {self.num_classes}) "
                f"(num_classes={self.num_classes}); for one input it returned {shape}."
            )

    def counts(self, x: torch.Tensor, n: int, *, sigma: float | None = None,
               batch_size: int = 1000, seed: int = 0, stream: int = _ESTIMATION,
               first_index: int = 0, progress: Callable[[int], None] | None = None
               ) -> torch.Tensor:
        """(N, num_classes) votes of ``n`` noisy copies of each input, counted on the device.

        Input ``i`` draws from the generator seeded by ``(seed, first_index + i, stream)``.
        ``progress`` (optional) is called with the number of samples done after each pass.
        """
        x = self._check_inputs(x)
        n = _check_int(n, "n", 1)
        batch_size = _check_int(batch_size, "batch_size", 1)
        _, sigma = check_noise(self.law, self.sigma if sigma is None else sigma)
        device, k = x.device, self.num_classes
        votes = torch.zeros(x.shape[0] * k, dtype=torch.long, device=device)
        # One forward buffer of exactly batch_size noisy inputs; chunks of one input's draws
        # may straddle two passes, so every pass (but the last) is full.
        size = min(batch_size, x.shape[0] * n)
        buffer = torch.empty((size, *x.shape[1:]), dtype=x.dtype, device=device)
        owner = torch.empty(size, dtype=torch.long, device=device)
        filled = 0

        def forward(count: int) -> None:
            logits = self.model(buffer[:count])
            if logits.dim() != 2 or logits.shape != (count, k):
                raise BadInputError(
                    f"the model must return logits of shape (batch, {k}); for {count} inputs "
                    f"it returned {tuple(logits.shape)}."
                )
            votes.add_(torch.bincount(owner[:count] * k + logits.argmax(1),
                                      minlength=votes.numel()))
            if progress is not None:
                progress(count)

        with torch.inference_mode():
            for i in range(x.shape[0]):
                generator = torch.Generator(device).manual_seed(
                    _stream_seed(seed, first_index + i, stream))
                left = n
                while left > 0:
                    c = min(DRAW_CHUNK, left)
                    noise = sample_noise((c, *x.shape[1:]), self.law, sigma,
                                         generator=generator, device=device, dtype=x.dtype)
                    left -= c
                    done = 0
                    while done < c:
                        take = min(c - done, size - filled)
                        torch.add(noise[done:done + take], x[i],
                                  out=buffer[filled:filled + take])
                        owner[filled:filled + take] = i
                        filled += take
                        done += take
                        if filled == size:
                            forward(filled)
                            filled = 0
            if filled:
                forward(filled)
        return votes.view(x.shape[0], k)

    # ------------------------------------------------------------------ PREDICT
    def predict(self, x: torch.Tensor, n: int = 1000, alpha: float = 0.001, *,
                batch_size: int = 1000, seed: int = 0, first_index: int = 0) -> torch.Tensor:
        """Cohen's PREDICT: the top class, or -1 where the two-sided binomial test of the top two
        counts is not significant at ``alpha``. Wrong (not ``g(x)``) w.p. at most ``alpha``."""
        alpha = _check_alpha(alpha)
        self._check_inputs(x)
        self._check_model_output(x)
        counts = self.counts(x, n, batch_size=batch_size, seed=seed, stream=_PREDICTION,
                             first_index=first_index).cpu()
        top = counts.topk(2, dim=1)
        out = torch.full((x.shape[0],), -1, dtype=torch.long)
        for i in range(x.shape[0]):
            n_a, n_b = int(top.values[i, 0]), int(top.values[i, 1])
            if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
                out[i] = top.indices[i, 0]
        return out.to(x.device)

    # ------------------------------------------------------------------ CERTIFY
    def _check_certify_args(self, n0, n, alpha) -> tuple[int, int, float]:
        n0 = _check_int(n0, "n0", 1)
        n = _check_int(n, "n", 1)
        alpha = _check_alpha(alpha)
        if n < min_samples(alpha):
            raise BadInputError(
                f"n >= {min_samples(alpha)} is needed to certify anything at alpha={alpha:g} "
                f"(got n={n}): even n/n votes give a lower bound alpha**(1/n) <= 1/2."
            )
        return n0, n, alpha

    def select(self, x: torch.Tensor, n0: int, *, batch_size: int = 1000, seed: int = 0,
               first_index: int = 0) -> torch.Tensor:
        """The guessed top class of each input from ``n0`` selection samples (its own stream)."""
        counts0 = self.counts(x, n0, batch_size=batch_size, seed=seed, stream=_SELECTION,
                              first_index=first_index)
        return counts0.argmax(1)

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                *, batch_size: int = 1000, seed: int = 0, first_index: int = 0,
                progress: Callable[[int], None] | None = None) -> SmoothingResult:
        """Cohen's CERTIFY for every input of the batch ``x`` (see the module docstring)."""
        n0, n, alpha = self._check_certify_args(n0, n, alpha)
        self._check_inputs(x)
        self._check_model_output(x)
        guess = self.select(x, n0, batch_size=batch_size, seed=seed, first_index=first_index)
        counts = self.counts(x, n, batch_size=batch_size, seed=seed, stream=_ESTIMATION,
                             first_index=first_index, progress=progress)
        n_a = counts.gather(1, guess[:, None])[:, 0].cpu().numpy()
        p_lower = np.atleast_1d(clopper_pearson_lower(n_a, n, alpha))
        ok = p_lower >= 0.5
        dim = int(np.prod(x.shape[1:]))
        radii = {
            nm: torch.from_numpy(np.atleast_1d(
                smoothing_radius(p_lower, self.sigma, self.law, nm, dim)).copy())
            for nm in RADIUS_NORMS[self.law]
        }
        prediction = torch.where(torch.from_numpy(ok), guess.cpu(), torch.tensor(-1))
        main = RADIUS_NORMS[self.law][0]
        return SmoothingResult(
            prediction=prediction, radius=radii[main], norm=main, counts=counts.cpu(),
            p_lower=torch.from_numpy(p_lower.copy()), radii=radii, law=self.law,
            sigma=self.sigma, n0=n0, n=n, alpha=alpha,
        )

    def certify_multi(self, x: torch.Tensor, sigmas: Sequence[float] = (), n0: int = 100,
                      n: int = 100_000, alpha: float = 0.001, *, batch_size: int = 1000,
                      seed: int = 0, first_index: int = 0,
                      progress: Callable[[int], None] | None = None) -> SmoothingResult:
        """The several-distribution certificate of Ettedgui et al. 2022 (arXiv 2206.01715).

        Gaussian law only. The smoothed classifier is the one at ``self.sigma``; the selected
        class is probed with ``n`` samples under ``self.sigma`` and ``n`` samples under each
        of ``sigmas`` (same centre). Each of the ``k = 1 + len(sigmas)`` probabilities gets a
        one-sided Clopper-Pearson lower bound at ``alpha / k`` (Bonferroni), so all hold together
        with probability ``>= 1 - alpha``; selection samples are separate. The radius is
        :func:`lipcert.certify.multi_sigma.multi_sigma_radius` (never below Cohen's radius from the
        same corrected bound, stored in ``extra["radius_cohen"]``).
        """
        from lipcert.certify.multi_sigma import multi_sigma_radius

        if self.law != "gaussian":
            raise BadInputError(
                f"certify_multi needs Gaussian noise (law='gaussian'), not {self.law!r}."
            )
        probes = [check_noise("gaussian", s)[1] for s in sigmas]
        if any(s == self.sigma for s in probes) or len(set(probes)) != len(probes):
            raise BadInputError(
                f"sigmas must be distinct probe standard deviations other than sigma={self.sigma}"
                f", got {list(sigmas)}."
            )
        k = 1 + len(probes)
        n0, n, alpha = self._check_certify_args(n0, n, alpha)
        if n < min_samples(alpha / k):
            raise BadInputError(
                f"n >= {min_samples(alpha / k)} is needed to certify anything at "
                f"alpha={alpha:g} split over {k} distributions (got n={n})."
            )
        self._check_inputs(x)
        self._check_model_output(x)
        guess = self.select(x, n0, batch_size=batch_size, seed=seed, first_index=first_index)
        all_counts, lowers = [], []
        for j, s in enumerate([self.sigma, *probes]):
            counts = self.counts(x, n, sigma=s, batch_size=batch_size, seed=seed,
                                 stream=_PREDICTION + 1 + j, first_index=first_index,
                                 progress=progress)
            all_counts.append(counts.cpu())
            n_a = counts.gather(1, guess[:, None])[:, 0].cpu().numpy()
            lowers.append(np.atleast_1d(clopper_pearson_lower(n_a, n, alpha / k)))
        p_lowers = np.stack(lowers, axis=1)
        dim = int(np.prod(x.shape[1:]))
        cohen = np.atleast_1d(cohen_radius(p_lowers[:, 0], self.sigma))
        radius = np.array([
            multi_sigma_radius(self.sigma, probes, p_lowers[i], dim) if p_lowers[i, 0] >= 0.5
            else 0.0 for i in range(x.shape[0])])
        ok = p_lowers[:, 0] >= 0.5
        prediction = torch.where(torch.from_numpy(ok), guess.cpu(), torch.tensor(-1))
        radius_t = torch.from_numpy(radius)
        return SmoothingResult(
            prediction=prediction, radius=radius_t, norm="2", counts=all_counts[0],
            p_lower=torch.from_numpy(p_lowers[:, 0].copy()), radii={"2": radius_t},
            law="gaussian", sigma=self.sigma, n0=n0, n=n, alpha=alpha,
            extra={"radius_cohen": torch.from_numpy(cohen.copy()),
                   "p_lowers": torch.from_numpy(p_lowers.copy()),
                   "sigmas": torch.tensor([self.sigma, *probes], dtype=torch.float64),
                   "counts_all": torch.stack(all_counts, dim=1)},
        )
