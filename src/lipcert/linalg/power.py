"""Power iteration with persistent state: an estimate (a lower bound up to convergence).

Miyato et al., "Spectral Normalization for GANs" (arXiv 1802.05957), keep the singular
vector between training steps so that one step per update suffices. :class:`PowerIterationState`
is that state: a module holding the current right singular vector ``v`` in a buffer (saved
with ``state_dict``, moved with ``.to(device)``). The returned value is ``||A v||`` for a unit
``v`` detached from the graph, which never exceeds ``sigma_1(A)`` (up to rounding) and whose
gradient is ``u v^T`` as in PyTorch's ``spectral_norm``; it is an ``estimate``, never a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lipcert.errors import BadInputError

__all__ = ["PowerIterationState", "power_iteration"]

LinearMap = Callable[[torch.Tensor], torch.Tensor]


class PowerIterationState(nn.Module):
    """Right singular vector kept across calls (and training steps) in the buffer ``v``.

    Args:
        shape: shape of the operator's input (for a dense ``m x n`` matrix: ``(n,)``; for a
            convolution: ``(1, c_in, *input_size)``).
        seed: seed of the random start (or pass ``generator``).
        generator: a ``torch.Generator`` for the random start.
        dtype, device: of the buffer; it follows the module on ``.to(...)``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        start = torch.randn(tuple(shape), generator=generator, dtype=dtype)
        self.register_buffer("v", (start / torch.linalg.vector_norm(start)).to(device))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=device))

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise :class:`BadInputError` if the stored vector does not fit ``shape``."""
        if tuple(self.v.shape) != tuple(shape):
            raise BadInputError(
                f"PowerIterationState holds a vector of shape {tuple(self.v.shape)} but the "
                f"operator takes inputs of shape {tuple(shape)}; create a new state for it."
            )

    def run(
        self, apply: LinearMap, adjoint: LinearMap, n_iter: int, like: torch.Tensor
    ) -> torch.Tensor:
        """Continue the iteration from the stored vector; store the new one; return ``||A v||``.

        ``like`` gives the dtype and device the operator works in (its weight).
        """
        value, vec = power_iteration(
            apply, adjoint, self.v.to(dtype=like.dtype, device=like.device), n_iter
        )
        with torch.no_grad():
            self.v.copy_(vec.to(self.v.dtype))
            self.steps.add_(n_iter)
        return value


def power_iteration(
    apply: LinearMap, adjoint: LinearMap, start: torch.Tensor, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``n_iter`` steps of ``v <- A^T A v / ||A^T A v||`` and return ``(||A v||, v)``.

    ``apply``/``adjoint`` may depend on weights that require grad: the iteration runs without
    grad, and the returned ``||A v||`` (with ``v`` a detached unit vector) is differentiable in
    the weights. It never exceeds ``sigma_1(A)`` beyond rounding: an ``estimate``.
    """
    with torch.no_grad():
        vec = start / torch.linalg.vector_norm(start)
        for _ in range(n_iter):
            grown = adjoint(apply(vec))
            norm = torch.linalg.vector_norm(grown)
            if not bool(norm > 0):
                break
            vec = grown / norm
    return torch.linalg.vector_norm(apply(vec)), vec
