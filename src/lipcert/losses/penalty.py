"""Lipschitz regularization: a differentiable upper bound of the network's Lipschitz constant.

The penalty is the product of the spectral-norm upper bounds of the model's linear layers
(``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, at the input sizes seen on ``example_input``).
It is a regularizer, not a certificate: it bounds the network's l2 Lipschitz constant only
for a plain chain whose other layers are 1-Lipschitz (ReLU, GroupSort...); certify with
:func:`lipcert.bounds.lipschitz_bound`, which handles every supported graph.
Two bounds are available:

- ``"gram"``: Gram iteration (Delattre, Barthelemy, Araujo, Allauzen 2023, arXiv 2305.16173).
- ``"toeplitz"``: the Toeplitz/grid bound of convolutions (Araujo, Negrevergne, Chevaleyre,
  Atif 2021, arXiv 2006.08391); dense layers use the Gram bound.

The product is formed in log space; add ``weight * penalty`` to the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from lipcert.errors import BadInputError

PENALTY_METHODS = ("gram", "toeplitz")
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def linear_layers_with_inputs(
    model: nn.Module, example_input: torch.Tensor
) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The Linear and Conv modules ``model`` calls on ``example_input``, with input shapes."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append((module, tuple(args[0].shape)))

    handles = [m.register_forward_pre_hook(record) for m in model.modules()
               if isinstance(m, LINEAR_LAYERS)]
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
    return seen


def layer_norm(module: nn.Module, input_shape: tuple[int, ...], method: str) -> torch.Tensor:
    """Differentiable spectral-norm upper bound of one Linear or Conv layer at ``input_shape``."""
    from lipcert.linalg import operator_norm

    layer_method = "gram" if isinstance(module, nn.Linear) else method
    bound = operator_norm(module, input_shape, method=layer_method)
    bound.require_sound(f"the penalty's bound of {type(module).__name__}")
    return bound.value


def lipschitz_penalty(
    model: nn.Module, example_input: torch.Tensor, method: str = "gram"
) -> torch.Tensor:
    """Product of the layers' spectral-norm upper bounds (0-dim tensor, differentiable).

    Args:
        model: the network; its ``nn.Linear`` and ``nn.Conv1d/2d`` layers are bounded.
        example_input: one batch (only its first sample is run) to read layer input sizes.
        method: ``"gram"`` or ``"toeplitz"`` (see the module docstring).
    """
    if method not in PENALTY_METHODS:
        raise BadInputError(
            f"unknown penalty method {method!r}; choose one of {', '.join(PENALTY_METHODS)}."
        )
    layers = linear_layers_with_inputs(model, example_input)
    if not layers:
        raise BadInputError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv layer to regularize."
        )
    logs = [torch.log(layer_norm(m, shape, method)) for m, shape in layers]
    return torch.exp(torch.stack(logs).sum())
