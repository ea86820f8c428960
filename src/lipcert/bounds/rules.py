"""The registry of per-module Lipschitz rules, and how a module finds its rule.

A rule is ``fn(module, input_shape) -> NormBound``: an upper bound (or the exact value) of
the l2 Lipschitz constant of ``module`` as a map on ONE sample, given the shape of the batch
it receives in the traced example (``input_shape[0]`` is the batch size). Rules must not
return an ``estimate``; :func:`apply_rule` refuses one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lipcert.errors import BadInputError, UnsoundRequestError, UnsupportedLayerError, check_finite
from lipcert.linalg.result import NormBound

ModuleRule = Callable[[nn.Module, torch.Size], NormBound]

_MODULE_RULES: dict[type, ModuleRule] = {}

# Methods whose override in a subclass changes what a registered base class computes.
_BEHAVIOUR_METHODS = ("forward", "_conv_forward")

HOW_TO_ADD = (
    "Add a rule with lipcert.bounds.register_rule({name}, fn), where fn(module, input_shape) "
    "returns a lipcert.linalg.NormBound upper bound of its l2 Lipschitz constant, or give "
    "the module a lipschitz_bound(input_shape) method."
)


def register_rule(module_type: type[nn.Module], fn: ModuleRule) -> None:
    """Register ``fn`` as the Lipschitz rule of modules of type ``module_type``.

    ``fn(module, input_shape)`` must return a :class:`~lipcert.linalg.NormBound` whose
    guarantee is ``"exact"`` or ``"upper"`` for the l2 Lipschitz constant of the module on
    one sample. Modules of a registered type are not traced into. A subclass inherits the
    rule only if it does not override ``forward``. Registering a type again replaces its rule.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise BadInputError(
            f"register_rule expects a torch.nn.Module subclass, got {module_type!r}."
        )
    if not callable(fn):
        raise BadInputError(f"the rule for {module_type.__name__} must be callable, got {fn!r}.")
    _MODULE_RULES[module_type] = fn


def _own_lipschitz_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    return module.lipschitz_bound(input_shape)


def find_rule(module: nn.Module) -> ModuleRule | None:
    """The rule for ``module``: registered for its class (or a base class whose behaviour it
    keeps, e.g. a class created by ``torch.nn.utils.parametrize``), else its own
    ``lipschitz_bound`` method; None if it has neither."""
    cls = type(module)
    for base in cls.__mro__:
        if base in _MODULE_RULES:
            if base is cls or all(
                getattr(cls, name, None) is getattr(base, name, None) for name in _BEHAVIOUR_METHODS
            ):
                return _MODULE_RULES[base]
            break
    if callable(getattr(module, "lipschitz_bound", None)):
        return _own_lipschitz_bound
    return None


def has_rule(module: nn.Module) -> bool:
    """True if ``module`` is bounded as a whole (a leaf of the traced graph)."""
    return find_rule(module) is not None


def _check_hooks(module: nn.Module, path: str) -> None:
    """Refuse forward hooks: they can change the output behind the rule's back."""
    # torch's legacy reparametrizations only recompute .weight, which the rule then reads.
    allowed = ("SpectralNorm", "WeightNorm")
    pre = [h for h in module._forward_pre_hooks.values() if type(h).__name__ not in allowed]
    if module._forward_hooks or pre:
        raise UnsupportedLayerError(
            f"module {path!r} ({type(module).__name__}) has forward hooks, which may change its "
            "output; lipcert cannot bound it. Remove the hooks before computing the bound."
        )


def apply_rule(module: nn.Module, input_shape: torch.Size, path: str) -> NormBound:
    """Run the rule of ``module`` (named ``path``) and check what it returns.

    Raises :class:`UnsupportedLayerError` without a rule, :class:`UnsoundRequestError` for an
    estimate, and :class:`BadInputError` for NaN/Inf weights or bounds.
    """
    rule = find_rule(module)
    if rule is None:
        name = type(module).__name__
        raise UnsupportedLayerError(
            f"no Lipschitz rule for module {path!r} of type {name}. "
            + HOW_TO_ADD.format(name=f"{type(module).__module__}.{name}")
        )
    _check_hooks(module, path)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point():
            check_finite(tensor, f"{path}.{name}")
    bound = rule(module, torch.Size(input_shape))
    if not isinstance(bound, NormBound):
        raise BadInputError(
            f"the Lipschitz rule of {path!r} returned {type(bound).__name__}; rules must return "
            "a lipcert.linalg.NormBound."
        )
    if not bound.is_sound:
        raise UnsoundRequestError(
            f"the Lipschitz rule of {path!r} gave an estimate (method {bound.method!r}) that may "
            "lie below the true constant; a network bound needs 'exact' or 'upper' rules."
        )
    check_finite(bound.value, f"the Lipschitz bound of {path!r}")
    return bound
