"""Lower bound of a network's l2 Lipschitz constant by gradient ascent on ||J(x) v||."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp

from lipcert.errors import BadInputError, check_finite

LOWER_METHOD = "gradient-norm ascent"


class LowerBound(float):
    """A lower bound of a Lipschitz constant: a ``float`` (so it compares and formats as one)
    that carries its guarantee, like :class:`lipcert.linalg.NormBound` does for upper bounds.

    ``guarantee`` is ``"lower"``: the value is attained, ``||J(x) v|| / ||v||`` at a point the
    search visited (up to the float rounding of that product), so the true constant is never
    below it where the model is differentiable at that point. ``method`` names the search and
    ``steps`` its length.
    """

    guarantee = "lower"

    def __new__(cls, value: float, method: str = LOWER_METHOD, steps: int = 0) -> LowerBound:
        bound = super().__new__(cls, value)
        bound.method, bound.steps = method, steps
        return bound

    def __repr__(self) -> str:
        return (f"LowerBound({float(self)!r}, guarantee='lower', method={self.method!r}, "
                f"steps={self.steps})")


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Each sample of ``t`` scaled to unit l2 norm."""
    norms = t.flatten(1).norm(dim=1).clamp_min(torch.finfo(t.dtype).tiny)
    return t / norms.view(-1, *([1] * (t.dim() - 1)))


@torch.enable_grad()
def lipschitz_lower_bound(model: nn.Module, inputs: torch.Tensor, steps: int = 50,
                          seed: int = 0, step_size: float | None = None) -> LowerBound:
    """The largest ||J(x) v|| (||v|| = 1) found by ascent over inputs x and directions v.

    Each sample of ``inputs`` starts one search: ``v`` follows power iteration
    (v <- J^T J v / ||J^T J v||, computed by autograd through a forward-mode JVP) and ``x``
    moves by normalized gradient ascent on ||J(x) v|| (a random step where that gradient
    vanishes, as in the linear regions of ReLU networks). The returned number is
    ||J(x) v|| / ||v|| evaluated at one of the visited points, so it is attained: a true lower
    bound of the l2 Lipschitz constant wherever the model is differentiable at that point
    (almost everywhere). Returned as a :class:`LowerBound` (a float with ``guarantee
    "lower"``), so it reads beside the upper bound of :func:`lipschitz_bound`.

    Args:
        model: maps a batch (N, ...) to a batch of outputs (N, ...), sample by sample.
        inputs: starting points, shape (N, ...).
        steps: ascent steps.
        seed: seeds the initial directions and random steps.
        step_size: l2 length of each input step (default: 5% of the inputs' mean norm).
    """
    if not torch.is_tensor(inputs) or not inputs.is_floating_point() or inputs.dim() < 1:
        raise BadInputError("inputs must be a floating-point tensor of shape (N, ...).")
    check_finite(inputs, "inputs")
    if steps < 1:
        raise BadInputError(f"steps must be at least 1, got {steps}.")
    random_in_training = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    if any(m.training for m in model.modules() if isinstance(m, random_in_training)):
        raise BadInputError("the model has batch-norm or dropout layers in training mode, where "
                            "one sample's output depends on the batch or on chance; call "
                            "model.eval() first.")
    generator = torch.Generator(device=inputs.device).manual_seed(seed)

    def noise() -> torch.Tensor:
        return torch.randn(inputs.shape, generator=generator, device=inputs.device,
                           dtype=inputs.dtype)

    if step_size is None:
        step_size = 0.05 * float(inputs.flatten(1).norm(dim=1).mean().clamp_min(1e-3))
    x = inputs.detach().clone()
    v = _unit(noise())
    best = 0.0
    for _ in range(steps):
        x.requires_grad_(True)
        v.requires_grad_(True)
        output, jv = jvp(model, (x,), (v,))
        if not torch.is_tensor(output) or output.shape[:1] != x.shape[:1]:
            raise BadInputError("the model must return one tensor with the batch dimension first.")
        gains = jv.flatten(1).norm(dim=1) / v.detach().flatten(1).norm(dim=1)
        check_finite(gains, "the directional derivatives ||J(x) v||")
        best = max(best, float(gains.detach().max()))
        grad_x, grad_v = torch.autograd.grad(gains.sum(), (x, v), allow_unused=True)
        grad_x = torch.zeros_like(x) if grad_x is None else grad_x
        grad_v = torch.zeros_like(v) if grad_v is None else grad_v
        moved = grad_x.flatten(1).norm(dim=1) > 0
        direction = torch.where(moved.view(-1, *([1] * (x.dim() - 1))), grad_x, noise())
        x = (x + step_size * _unit(direction)).detach()
        stalled = grad_v.flatten(1).norm(dim=1) == 0
        v = _unit(torch.where(stalled.view(-1, *([1] * (v.dim() - 1))), noise(), grad_v)).detach()
    return LowerBound(best, LOWER_METHOD, steps)
