"""How far a model's floating-point logits can be from the real-arithmetic network.

A Lipschitz certificate bounds the REAL function ``f`` of the weights. The model a user runs
computes ``f̂ = f + e`` in its dtype, so a prediction is only certified if the margin
covers the rounding ``e``. This module bounds ``||e(x')||_2`` for every ``x'`` at l2 distance
``r`` from ``x`` by an affine function ``offset + slope * r`` (:class:`RoundingAllowance`),
with the forward-error analysis of Higham, *Accuracy and Stability of Numerical Algorithms*
(2002), ch. 3, applied layer by layer as in Jeannerod & Rump (2013) and, for networks,
Jin, Pinto and Cheng (arXiv 2207.04484, "floating-point soundness of certificates").

The proof (``proven=True``), for a chain of modules ``g_K ∘ ... ∘ g_1`` (an ``nn.Sequential``,
nested ones opened, whose modules are ``nn.Linear``/``nn.Conv1d/2d/3d`` with their own
forward, exactly computed ops (``Identity``, ``Flatten``, ``Unflatten``, ``ReLU``,
``ReLU6``, ``Hardtanh``, ``Dropout`` in eval mode) and elementwise activations):

* an affine layer ``W h + b`` with ``n`` terms per output (fan-in + bias) computed in any
  order, with or without FMA, has error ``|fl(Wh + b) - (Wh + b)| <= γ_n (|W||h| + |b|)``
  componentwise, ``γ_n = n u / (1 - n u)`` (Higham, eq. 3.5), hence in l2 norm at most
  ``γ_n S`` with ``S = || |W||h| + |b| ||_2`` measured on the float input at ``x``. At ``x'``
  the input moves by at most ``L_{k-1} r + e_{k-1}(x) + e_{k-1}(x')`` (``L_{k-1}`` the
  Lipschitz bound of the layers before), and ``S`` by at most ``|||W|||_2`` times that
  (``|||W|||_2 <= ||W||_F``; for a convolution the Schur bound ``sqrt(max row sum * max
  column sum)`` of the kernel's absolute values);
* an elementwise activation is assumed accurate to 8 ulp of its result plus 8 ulp of its
  argument (torch's vectorized libm is within 4 ulp): error ``<= 16 u (||σ(h)|| + ||h||)``;
* errors propagate: ``e_k(x') <= l_k e_{k-1}(x') + ε_k(x')`` with ``l_k`` the layer's
  Lipschitz bound, since ``ĝ(ĥ) - g(h) = [ĝ(ĥ) - g(ĥ)] + [g(ĥ) - g(h)]``.

The recurrence is linear in ``r``, so ``e_K(x') <= offset + slope * r`` exactly (no
second-order term is dropped). ``u`` is the unit roundoff of the dtype (``2**-24`` in
float32), and ``2**-11`` for float32 matrix products on CUDA when TF32 is allowed.

Any other model (residual graphs, functional ops between modules, normalization, custom
layers, hooks): the allowance is an ESTIMATE (``proven=False``): the largest input, output or
``|W||h| + |b|`` norm seen at any module, grown by ``L r``, times ``γ_N`` with ``N`` the sum
over the modules run of their rounding steps per output (fan-in + 1 for Linear/Conv; twice
the longest weight row, plus the input entries per output, plus 4 for other modules), times
``4 max(1, L)``, in the least precise dtype any op produced. It is far above the rounding
seen in practice, but not a proof (README, "Guarantees").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

EXACT_TYPES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.ReLU, nn.ReLU6, nn.Hardtanh,
               nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
ELEMENTWISE_TYPES = (nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
                     nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Hardswish, nn.Hardsigmoid,
                     nn.Tanhshrink, nn.LogSigmoid)
AFFINE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATION_ULPS = 16.0  # 8 ulp of the result plus 8 ulp of the argument, in units of u
ESTIMATE_FACTOR = 4.0


@dataclass(frozen=True)
class RoundingAllowance:
    """Per-sample bound ``||f̂(x') - f(x')||_2 <= offset + slope * ||x' - x||`` on the logits'
    rounding (``f̂`` the model as computed, ``f`` the real-arithmetic network), and the same
    for the reference logits the margins are read from: ``||z_ref - f(x)||_2 <= reference``.

    Attributes:
        offset, slope, reference: float64 tensors of shape (batch,).
        proven: True when derived by the forward-error analysis (module docstring), False for
            the magnitude-based estimate.
        dtype: the dtype the model computes in.
    """

    offset: torch.Tensor
    slope: torch.Tensor
    reference: torch.Tensor
    proven: bool
    dtype: torch.dtype

    def margin_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a0, a1): a logit difference ``z_c - z_j`` of the model at ``x'`` is within
        ``a0 + a1 r`` of the same difference of the reference logits at ``x`` minus the
        real network's change, as ``|e_c| + |e_j| <= sqrt(2) ||e||_2``."""
        root2 = math.sqrt(2.0)
        return root2 * (self.offset + self.reference), root2 * self.slope


def unit_roundoff(dtype: torch.dtype, device: torch.device | None = None,
                  matmul: bool = False) -> float:
    """``u = eps / 2`` of ``dtype``; TF32's ``2**-11`` for float32 products on CUDA when
    torch allows TF32 there (``matmul=True``)."""
    u = torch.finfo(dtype).eps / 2.0
    if (matmul and dtype == torch.float32 and device is not None and device.type == "cuda"
            and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)):
        u = max(u, 2.0 ** -11)
    return u


def gamma(n: int, u: float) -> float:
    """Higham's ``γ_n = n u / (1 - n u)``; inf when ``n u >= 1`` (no bound)."""
    return n * u / (1.0 - n * u) if n * u < 1.0 else math.inf


def _sample_norms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64).flatten(1).norm(dim=1)


def _affine_terms(module: nn.Module, h: torch.Tensor) -> tuple[int, torch.Tensor, float]:
    """(n, S, |||W|||): terms per output, ``|| |W||h| + |b| ||_2`` per sample, a bound of the
    l2 norm of the map ``h -> |W| h``."""
    weight = module.weight.detach().to(torch.float64)
    bias = None if module.bias is None else module.bias.detach().to(torch.float64).abs()
    magnitude = h.detach().to(torch.float64).abs()
    if isinstance(module, nn.Linear):
        scale = F.linear(magnitude, weight.abs(), bias)
        return weight.shape[1] + 1, _sample_norms(scale.reshape(len(h), -1)), float(
            weight.norm())
    scale = module._conv_forward(magnitude, weight.abs(), bias)
    absolute = weight.abs().flatten(2).sum(2)  # (out, in / groups): l1 norm of each kernel
    schur = math.sqrt(float(absolute.sum(1).max()) * float(absolute.sum(0).max()))
    return weight[0].numel() + 1, _sample_norms(scale), schur


class DtypeWatch(TorchFunctionMode):
    """Records the least precise floating dtype among the outputs of every torch function
    and tensor method run inside the block (``x.float()`` in a forward included)."""

    def __init__(self, start: torch.dtype):
        super().__init__()
        self.least = start

    def _see(self, value) -> None:
        if torch.is_tensor(value):
            if value.is_floating_point() and (torch.finfo(value.dtype).eps
                                              > torch.finfo(self.least).eps):
                self.least = value.dtype
        elif isinstance(value, (tuple, list)):
            for item in value:
                self._see(item)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self._see(result)
        return result


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The modules of a plain nn.Sequential chain (nested ones opened) that the proof covers,
    or None."""
    hooks = (torch.nn.modules.module._global_forward_hooks,
             torch.nn.modules.module._global_forward_pre_hooks)
    if any(hooks):
        return None

    def plain(module: nn.Module) -> bool:
        return (not module._forward_hooks and not module._forward_pre_hooks
                and "forward" not in vars(module) and type(module).__call__ is nn.Module.__call__)

    def walk(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]] | None:
        if not plain(module):
            return None
        if type(module) is nn.Sequential:
            found: list[tuple[str, nn.Module]] = []
            for name, child in module.named_children():
                part = walk(child, f"{prefix}{name}.")
                if part is None:
                    return None
                found += part
            return found
        name = prefix.rstrip(".")
        if isinstance(module, AFFINE_TYPES):
            base = next(t for t in AFFINE_TYPES if isinstance(module, t))
            ok = type(module).forward is base.forward and (
                base is nn.Linear or type(module)._conv_forward is base._conv_forward)
            return [(name, module)] if ok and module.weight.is_floating_point() else None
        if type(module) in EXACT_TYPES:
            if isinstance(module, nn.modules.dropout._DropoutNd) and module.training:
                return None
            return [(name, module)]
        if type(module) in ELEMENTWISE_TYPES:
            return [(name, module)]
        return None

    return walk(model, "")


def _local_bound(module: nn.Module, name: str, shape: torch.Size,
                 known: dict[str, float]) -> float:
    """A sound Lipschitz bound of one chain module: from the report when it lists the module
    once, else from its rule."""
    if name in known:
        return known[name]
    from lipcert.bounds.rules import apply_rule

    return float(apply_rule(module, shape, name or type(module).__name__).value.detach())


def _recorded_bounds(report) -> dict[str, float]:
    if report is None:
        return {}
    counts: dict[str, int] = {}
    for step in report.layers:
        counts[step.name] = counts.get(step.name, 0) + 1
    return {s.name: s.bound for s in report.layers if counts[s.name] == 1}


def _proof(chain: list[tuple[str, nn.Module]], x: torch.Tensor, report,
           reference_dtype: torch.dtype | None) -> tuple[torch.Tensor, RoundingAllowance]:
    """Run the chain in the model's dtype and propagate the error recurrence."""
    known = _recorded_bounds(report)
    batch = len(x)
    zeros = torch.zeros(batch, dtype=torch.float64, device=x.device)
    # e(x') <= A + B r in the model's dtype; R bounds the reference run's error at x.
    A, B, R = zeros.clone(), zeros.clone(), zeros.clone()
    lipschitz_before = 1.0
    h = x
    dtype = None
    for name, module in chain:
        local = _local_bound(module, name, h.shape, known)
        with torch.no_grad():
            out = module(h)
        dtype = out.dtype
        if isinstance(module, AFFINE_TYPES):
            n, scale, growth = _affine_terms(module, h)
            g = gamma(n, unit_roundoff(out.dtype, out.device, matmul=True))
            g_ref = 0.0 if reference_dtype is None else gamma(n, unit_roundoff(reference_dtype))
            moved_slope = lipschitz_before + B
            moved_offset = 2.0 * A
            eps_offset = g * (scale + growth * moved_offset)
            eps_slope = g * growth * moved_slope
            # the reference run's input is within A + R of this run's: its S is within
            # growth * (A + R)
            eps_ref = g_ref * (scale + growth * (A + R))
        elif type(module) in ELEMENTWISE_TYPES:
            u = unit_roundoff(out.dtype)
            u_ref = 0.0 if reference_dtype is None else unit_roundoff(reference_dtype)
            size = _sample_norms(out) + _sample_norms(h)
            spread = 1.0 + local
            eps_offset = ACTIVATION_ULPS * u * (size + spread * 2.0 * A)
            eps_slope = ACTIVATION_ULPS * u * spread * (lipschitz_before + B)
            eps_ref = ACTIVATION_ULPS * u_ref * (size + spread * (A + R))
        else:  # computed exactly
            eps_offset = eps_slope = eps_ref = zeros
        A = local * A + eps_offset
        B = local * B + eps_slope
        R = local * R + eps_ref
        lipschitz_before *= local
        h = out
    if reference_dtype is None:  # the margins are read from this run itself
        R = A.clone()
    return h, RoundingAllowance(A, B, R, True, dtype or x.dtype)


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The modules bounded as one piece (those with a Lipschitz rule, outermost first, as the
    tracer keeps them), and modules without children or rule."""
    from lipcert.bounds.rules import has_rule

    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        children = list(module.children())
        if has_rule(module) or not children:
            found.append(module)
            return
        for child in children:
            walk(child)

    walk(model)
    return found


def _leaf_terms(module: nn.Module, h: torch.Tensor, output) -> int:
    """Rounding steps per output entry of a module the proof does not cover: twice the longest
    row of its matrices (a product and its transpose, as in SLL/CPL layers), the input entries
    per output entry (sums in pooling), and 4 for the elementwise work around them."""
    rows = [p[0].numel() for p in module.parameters() if p.dim() >= 2]
    out = output if torch.is_tensor(output) else None
    ratio = 1 if out is None or out[0].numel() == 0 else -(-h[0].numel() // out[0].numel())
    return 2 * max(rows, default=0) + ratio + 4


def _estimate(model: nn.Module, x: torch.Tensor, lipschitz: float,
              reference_dtype: torch.dtype | None) -> tuple[torch.Tensor, RoundingAllowance]:
    """Magnitude-based estimate for models the proof does not cover (module docstring)."""
    batch = len(x)
    largest = torch.zeros(batch, dtype=torch.float64, device=x.device)
    terms = [0]
    # the least precise dtype any module computes in (a float64 output may come from float32
    # work inside), so the estimate uses its unit roundoff
    least = [x.dtype]

    def record(module: nn.Module, args: tuple, output) -> None:
        nonlocal largest
        tensors = [a for a in args if torch.is_tensor(a)]
        tensors += [output] if torch.is_tensor(output) else [
            o for o in (output if isinstance(output, (tuple, list)) else []) if torch.is_tensor(o)]
        for t in tensors:
            if t.is_floating_point() and torch.finfo(t.dtype).eps > torch.finfo(least[0]).eps:
                least[0] = t.dtype
            if t.is_floating_point() and t.dim() >= 1 and t.shape[0] == batch:
                largest = torch.maximum(largest, _sample_norms(t))
        h = args[0] if args and torch.is_tensor(args[0]) else None
        if h is not None and isinstance(module, AFFINE_TYPES) and h.shape[0] == batch:
            try:
                n, scale, _ = _affine_terms(module, h)
            except Exception:  # noqa: BLE001 (an exotic subclass: its sizes still count)
                n, scale = h[0].numel() + 1, largest
            largest = torch.maximum(largest, scale)
            terms[0] += n
        elif h is not None and id(module) in leaves and h.dim() >= 1:
            terms[0] += _leaf_terms(module, h, output)

    leaves = {id(m) for m in _leaves(model)}
    handles = [m.register_forward_hook(record) for m in model.modules()]
    watch = DtypeWatch(x.dtype)
    try:
        with torch.no_grad(), watch:
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if torch.is_tensor(logits) and logits.is_floating_point() and logits.dim() >= 1 \
            and logits.shape[0] == batch:
        largest = torch.maximum(largest, _sample_norms(logits))
        dtype = logits.dtype
    else:
        dtype = x.dtype
    if torch.finfo(watch.least).eps > torch.finfo(least[0]).eps:
        least[0] = watch.least
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and torch.finfo(tensor.dtype).eps > torch.finfo(
                least[0]).eps:
            least[0] = tensor.dtype
    n = max(terms[0], 1)
    factor = ESTIMATE_FACTOR * max(1.0, lipschitz)
    g = gamma(n, unit_roundoff(least[0], x.device, matmul=True))
    offset = factor * g * largest
    slope = torch.full_like(offset, factor * g * lipschitz)
    if reference_dtype is None:
        reference = offset.clone()
    else:
        reference = factor * gamma(n, unit_roundoff(reference_dtype)) * largest
    return logits, RoundingAllowance(offset, slope, reference, False, dtype)


def forward_with_allowance(model: nn.Module, x: torch.Tensor, lipschitz: float, report=None,
                           reference_dtype: torch.dtype | None = None
                           ) -> tuple[torch.Tensor, RoundingAllowance]:
    """Logits of ``model`` on ``x`` (computed as the model computes them) and the bound of
    their rounding error.

    Args:
        lipschitz: a sound Lipschitz bound of the whole model (the estimate's growth rate).
        report: the model's LipschitzReport, whose per-module bounds the proof reuses.
        reference_dtype: the dtype of a separate run whose logits the margins are read from
            (float64 copy), or None when the margins come from these logits.
    """
    chain = _chain(model)
    if chain:
        return _proof(chain, x, report, reference_dtype)
    return _estimate(model, x, lipschitz, reference_dtype)
