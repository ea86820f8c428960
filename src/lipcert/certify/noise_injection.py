"""Certified radii of networks with injected noise (Pinot et al. 2019, arXiv 1902.01148).

For a model ``back(front(x) + z)`` with one :class:`lipcert.layers.NoiseInjection`, the label
law of the noisy network moves, when the input moves within ``alpha``, by at most the
divergence between the noise law and its shift by ``L * alpha`` (``L`` a Lipschitz constant
of ``front``). :func:`noise_injection_radii` estimates the top-two label probabilities by
Monte Carlo with Clopper-Pearson bounds and turns them into radii through the routes of
:mod:`lipcert.certify.renyi` (Renyi maximized over the order, total variation, and for
Laplace the pure max-divergence), keeping the best valid one.

Norms and constants:

- Gaussian noise: l2 radii with ``L = L_{2->2}(front)`` from :func:`lipcert.bounds.lipschitz_bound`.
- Laplace and uniform noise: l1 radii (input measured in l1, the shift in l1) with
  ``L_{1->1}(front) <= sqrt(m) * L_{2->2}(front)``, ``m`` the number of coordinates the noise
  is added to (``||u||_1 <= sqrt(m) ||u||_2`` on the output, ``||v||_2 <= ||v||_1`` on the
  input); exactly 1 when ``front`` only reshapes (noise at the input).

Guarantee: with probability at least ``1 - alpha`` over the Monte Carlo draws, every point
with a positive radius keeps its predicted class (the argmax of the noisy network's label law)
for every input strictly inside its radius. A point whose confidence bounds do not separate the
top class from the others abstains (prediction -1, radius 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lipcert.bounds import LipschitzReport, lipschitz_bound
from lipcert.certify import renyi
from lipcert.certify.lipschitz import rounding_guard
from lipcert.certify.statistics import clopper_pearson_lower, clopper_pearson_upper
from lipcert.errors import BadInputError, LipcertError, UnsupportedLayerError, check_finite
from lipcert.layers.noise_injection import NoiseInjection, noise_layers
from lipcert.linalg.result import NormBound
from lipcert.noise import check_certifiable_dtype, law_scale, sample_noise

ROUTES = {"gaussian": ("renyi", "tv"), "laplace": ("renyi", "tv", "pure"), "uniform": ("tv",)}
"""The routes computed for each noise law."""

_RESHAPES = (nn.Identity, nn.Flatten, nn.Unflatten)


@dataclass(frozen=True, eq=False)
class NoiseInjectionRadii:
    """What :func:`noise_injection_radii` returns (tensors on the CPU, radii in float64).

    Attributes:
        prediction: (N,) the certified class, -1 where the point abstains.
        radius: (N,) best radius over the valid routes (0: abstained, or wrong when ``y``
            was given), in the ``norm`` of the input.
        routes: route name -> (N,) radius of that route alone.
        best_route: per point, the route that gave ``radius`` ("" where it is 0).
        order: (N,) the Renyi order of route (a) (nan where the law has no Renyi route).
        p_lower: (N,) lower confidence bound of the top class probability.
        p_upper: (N,) upper confidence bound of the runner-up probability.
        norm: 2.0 (Gaussian) or 1.0 (Laplace, uniform).
        lipschitz: the constant ``L`` of the part before the noise that the radii use.
        lipschitz_method: how ``L`` was obtained.
        law, sigma: the noise (sigma the standard deviation).
        correct: (N,) prediction equals ``y`` (None without ``y``).
    """

    prediction: Tensor
    radius: Tensor
    routes: dict[str, Tensor]
    best_route: list[str]
    order: Tensor
    p_lower: Tensor
    p_upper: Tensor
    norm: float
    lipschitz: float
    lipschitz_method: str
    law: str
    sigma: float
    correct: Tensor | None = None


def split_at_noise(model: nn.Module) -> tuple[nn.Sequential, NoiseInjection, nn.Sequential]:
    """``(front, noise, back)`` with ``model(x) == back(noise(front(x)))``, for a model whose
    single :class:`NoiseInjection` sits in (nested) ``nn.Sequential`` containers.

    Raises :class:`BadInputError` without exactly one NoiseInjection, and
    :class:`UnsupportedLayerError` when the noise sits inside another kind of module.
    """
    found = noise_layers(model)
    if len(found) != 1:
        where = ", ".join(repr(name) for name, _ in found)
        raise BadInputError(
            f"the noise-injection certificate needs exactly one NoiseInjection layer, the model "
            f"has {len(found)}{' (' + where + ')' if found else ''}; "
            + ("merge them into one layer." if found else
               "use lipcert.certify.lipschitz_radii for a deterministic model.")
        )
    front, noise, back = _split(model, found[0][0] or type(model).__name__)
    return nn.Sequential(*front), noise, nn.Sequential(*back)


def _split(module: nn.Module, path: str) -> tuple[list[nn.Module], NoiseInjection, list]:
    if isinstance(module, NoiseInjection):
        return [], module, []
    if isinstance(module, nn.Sequential):
        for index, child in enumerate(module):
            if noise_layers(child):
                front, noise, back = _split(child, path)
                return list(module[:index]) + front, noise, back + list(module[index + 1:])
    raise UnsupportedLayerError(
        f"the NoiseInjection {path!r} sits inside a {type(module).__name__}, where lipcert "
        "cannot tell which layers run before it; build the model as nn.Sequential containers "
        "around the noise layer."
    )


def _front_constant(
    front: nn.Sequential, x: Tensor, law: str, bound: LipschitzReport | NormBound | float | None
) -> tuple[float, str, bool]:
    """(L, how it was obtained, whether front only reshapes) for the law's norms."""
    identity = all(isinstance(m, _RESHAPES) for m in front)
    if identity and bound is None:
        return 1.0, "identity front part (noise at the input): L = 1 exactly", True
    if bound is None:
        report = lipschitz_bound(front, x[:1])
        value, how = float(report), f"lipcert.bounds.lipschitz_bound ({report.guarantee})"
    elif isinstance(bound, LipschitzReport):
        value, how = float(bound), f"given LipschitzReport ({bound.guarantee})"
    elif isinstance(bound, NormBound):
        value = float(bound.require_sound("the Lipschitz bound of the part before the noise"))
        how = f"given NormBound ({bound.method}, {bound.guarantee})"
    else:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise BadInputError(
                f"bound must be a LipschitzReport, a NormBound or a number, got {bound!r}."
            )
        value, how = float(bound), "given number"
    if not (math.isfinite(value) and value > 0):
        raise BadInputError(f"the Lipschitz bound of the part before the noise must be finite "
                            f"and > 0, got {value}.")
    if law != "gaussian":
        with torch.no_grad():
            m = front(x[:1]).numel()
        value *= math.sqrt(m)
        how = f"sqrt({m}) * l2 bound from {how} (l1 -> l1 via norm equivalence)"
    return value, how, identity


def _counts(back: nn.Module, h: Tensor, draws: int, law: str, sigma: float,
            generator: torch.Generator, classes: int | None, batch_size: int) -> Tensor:
    """(N, classes) counts of the argmax of ``back(h_i + z)`` over ``draws`` noise draws."""
    rows = []
    check_certifiable_dtype(h.dtype, "the input of the NoiseInjection layer")
    for point in h:
        count = None
        left = draws
        while left > 0:
            size = min(batch_size, left)
            batch = point.expand(size, *point.shape)
            noise = sample_noise(batch.shape, law, sigma, generator=generator,
                                 device=h.device, dtype=h.dtype)
            labels = back(batch + noise).argmax(dim=1)
            width = classes if classes is not None else int(labels.max()) + 1
            tally = torch.bincount(labels, minlength=width)
            if count is None:
                count = tally
            else:
                if len(tally) > len(count):
                    count = torch.nn.functional.pad(count, (0, len(tally) - len(count)))
                count[: len(tally)] += tally
            left -= size
        rows.append(count.cpu())
    width = max(len(r) for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, width - len(r))) for r in rows])


@torch.no_grad()
def noise_injection_radii(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    n: int = 10_000,
    alpha: float = 0.001,
    seed: int = 0,
    *,
    n0: int = 100,
    batch_size: int = 1000,
    bound: LipschitzReport | NormBound | float | None = None,
) -> NoiseInjectionRadii:
    """Certified radii of the noisy network ``model`` at each point of ``x``.

    Args:
        model: a classifier with exactly one :class:`lipcert.layers.NoiseInjection`, inside
            (nested) ``nn.Sequential`` containers; put it in eval mode first (its mode is
            not changed). The part before the noise must be supported by
            :mod:`lipcert.bounds` (or ``bound`` given).
        x: inputs (N, ...); y: labels (N,), optional; wrong predictions get radius 0.
        n: noise draws per point for the estimate; ``n0`` more choose the top class first.
        alpha: the failure probability of the whole certificate per point (half for the top
            class lower bound, half split over the other classes' upper bounds).
        seed: seeds a generator on ``x``'s device for the draws (the layer's own generator
            is left alone).
        batch_size: noisy copies per forward pass of the part after the noise.
        bound: an l2 Lipschitz bound of the part before the noise (a LipschitzReport, a
            sound NormBound, or a number you vouch for); default
            :func:`lipcert.bounds.lipschitz_bound` of it. An ``estimate`` is refused.

    Returns:
        A :class:`NoiseInjectionRadii`. Radii: Gaussian l2 from routes (a) Renyi (maximized
        over lambda) and (b) TV; Laplace l1 from (a), (b) and (c) pure divergence; uniform l1
        from the exact TV bound; see :mod:`lipcert.certify.renyi` for every formula.

    Raises:
        BadInputError: NaN/Inf inputs, bad n/alpha/labels, not exactly one NoiseInjection.
        UnsupportedLayerError: the noise is not inside Sequential containers, or the part
            before it has no Lipschitz rule.
        UnsoundRequestError: ``bound`` is an estimate.
    """
    check_finite(x, "x")
    if x.is_floating_point():
        check_certifiable_dtype(x.dtype, "x")
    if not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        raise BadInputError(f"x must be a non-empty floating-point batch (N, ...), got "
                            f"{x.dtype} {tuple(x.shape)}.")
    for name, value, low in (("n", n, 1), ("n0", n0, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BadInputError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise BadInputError(f"alpha must be a number in (0, 1), got {alpha!r}.")
    if y is not None and (not torch.is_tensor(y) or y.shape != x.shape[:1]
                          or y.is_floating_point()):
        raise BadInputError(f"y must hold one integer label per point ({x.shape[0]}).")
    front, noise, back = split_at_noise(model)
    law, sigma = noise.law, noise.sigma
    constant, how, identity = _front_constant(front, x, law, bound)

    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    h = front(x)
    check_finite(h, "the output of the part before the noise")
    selection = _counts(back, h, n0, law, sigma, generator, None, batch_size)
    top = selection.argmax(dim=1)
    counts = _counts(back, h, n, law, sigma, generator, None, batch_size)
    width = max(counts.shape[1], int(top.max()) + 1)
    counts = torch.nn.functional.pad(counts, (0, width - counts.shape[1])).numpy()
    top_np = top.numpy()
    k_top = counts[np.arange(len(top_np)), top_np]
    classes = max(width, 2)
    p1 = np.asarray(clopper_pearson_lower(k_top, n, alpha / 2), dtype=np.float64)
    others = counts.copy()
    others[np.arange(len(top_np)), top_np] = -1
    k_second = np.maximum(others.max(axis=1), 0)
    split_alpha = alpha / (2 * max(classes - 1, 1))
    p2 = np.minimum(1 - p1, np.asarray(clopper_pearson_upper(k_second, n, split_alpha)))
    p2 = np.clip(p2, 0.0, 1.0)
    separated = p1 > p2
    q1, q2 = np.where(separated, p1, 0.5), np.where(separated, p2, 0.5)

    scale = law_scale(law, sigma)
    routes: dict[str, np.ndarray] = {}
    order = np.full(len(p1), np.nan)
    if law == "gaussian":
        routes["renyi"], order = renyi.gaussian_renyi_radius(q1, q2, sigma, constant)
        routes["tv"] = renyi.gaussian_tv_radius(q1, q2, sigma, constant)
    elif law == "laplace":
        routes["renyi"], order = renyi.laplace_renyi_radius(q1, q2, scale, constant)
        routes["tv"] = renyi.laplace_tv_radius(q1, q2, scale, constant)
        routes["pure"] = renyi.laplace_pure_radius(q1, q2, scale, constant)
    else:
        routes["tv"] = renyi.uniform_tv_radius(q1, q2, scale, constant)
    guard = 1.0 + rounding_guard(x.dtype)
    routes = {name: np.where(separated, r, 0.0) / guard for name, r in routes.items()}
    stacked = np.stack([routes[name] for name in ROUTES[law]])
    radius = stacked.max(axis=0)
    best = [ROUTES[law][i] if r > 0 else "" for i, r in zip(stacked.argmax(axis=0), radius,
                                                                strict=True)]
    if law == "gaussian" and identity:
        ceiling = renyi.cohen_ceiling(q1, q2, sigma)
        if np.any(radius > ceiling * (1 + 1e-9) + 1e-12):
            raise LipcertError(
                "internal error: a noise-injection radius exceeds Cohen's tight radius for the "
                "same probabilities; please report this bug (no certificate was returned)."
            )
    prediction = torch.where(torch.from_numpy(separated), top, torch.full_like(top, -1))
    correct = None
    radius_t = torch.from_numpy(radius)
    if y is not None:
        correct = prediction == y.detach().cpu().long()
        radius_t = torch.where(correct, radius_t, torch.zeros_like(radius_t))
    return NoiseInjectionRadii(
        prediction=prediction,
        radius=radius_t,
        routes={name: torch.from_numpy(r) for name, r in routes.items()},
        best_route=best,
        order=torch.from_numpy(np.asarray(order, dtype=np.float64)),
        p_lower=torch.from_numpy(p1),
        p_upper=torch.from_numpy(p2),
        norm=2.0 if law == "gaussian" else 1.0,
        lipschitz=constant,
        lipschitz_method=how,
        law=law,
        sigma=sigma,
        correct=correct,
    )
