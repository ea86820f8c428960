"""The registry of per-module Lipschitz rules, and how a module finds its rule.

A rule is ``fn(module, input_shape) -> NormBound``: an upper bound (or the exact value) of
the l2 Lipschitz constant of ``module`` as a map on ONE sample, given the shape of the batch
it receives in the traced example (``input_shape[0]`` is the batch size). Rules must not
return an ``estimate``; :func:`apply_rule` refuses one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from lipcert.errors import BadInputError, UnsoundRequestError, UnsupportedLayerError, check_finite
from lipcert.linalg.result import NormBound

ModuleRule = Callable[[nn.Module, torch.Size], NormBound]

_INPUT_DTYPE: ContextVar[torch.dtype | None] = ContextVar("lipcert_rule_input_dtype", default=None)


def input_dtype() -> torch.dtype:
    """The dtype of the input the module being bounded receives, for rules whose answer
    depends on it (a jump hidden below that dtype's rounding); float64 when unknown."""
    return _INPUT_DTYPE.get() or torch.float64

_MODULE_RULES: dict[type, ModuleRule] = {}
# The registered class's own computing methods when its rule was registered: a later patch
# (``nn.Linear.forward = ...``) makes the rule describe another function.
_REGISTERED_BEHAVIOUR: dict[type, tuple[Any, ...]] = {}

# Methods whose override in a subclass changes what a registered base class computes.
_BEHAVIOUR_METHODS = ("forward", "_conv_forward", "__call__", "_call_impl")
# (not __call__: torch.fx patches nn.Module.__call__ while it traces)
_SNAPSHOT_METHODS = ("forward", "_conv_forward", "_call_impl")

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
    _REGISTERED_BEHAVIOUR[module_type] = tuple(getattr(module_type, name, None)
                                               for name in _SNAPSHOT_METHODS)


def _own_lipschitz_bound(module: nn.Module, input_shape: torch.Size) -> NormBound:
    return module.lipschitz_bound(input_shape)


def find_rule(module: nn.Module) -> ModuleRule | None:
    """The rule for ``module``, the most specific class first along its MRO: a rule
    registered for that class, or a ``lipschitz_bound`` method the class defines itself (so
    ``AOLConv2d.lipschitz_bound`` wins over the rule registered for its base ``nn.Conv2d``).
    A rule registered for a base class is used only if the module keeps that base's
    behaviour (e.g. a class created by ``torch.nn.utils.parametrize``). Last, a
    ``lipschitz_bound`` set on the instance. None if there is no rule."""
    cls = type(module)
    for base in cls.__mro__:
        if base in _MODULE_RULES:
            if any(getattr(cls, name, None) is not kept for name, kept in
                   zip(_SNAPSHOT_METHODS, _REGISTERED_BEHAVIOUR[base], strict=True)):
                break  # patched since registration, or overridden by the subclass
            if base is cls or all(
                getattr(cls, name, None) is getattr(base, name, None) for name in _BEHAVIOUR_METHODS
            ):
                return _MODULE_RULES[base]
            break
        if callable(vars(base).get("lipschitz_bound")):
            return _own_lipschitz_bound
    if callable(getattr(module, "lipschitz_bound", None)):
        return _own_lipschitz_bound
    return None


def has_rule(module: nn.Module) -> bool:
    """True if ``module`` is bounded as a whole (a leaf of the traced graph)."""
    return find_rule(module) is not None


def _legitimate_pre_hook_types() -> tuple[type, ...]:
    """torch's own reparametrization hooks, by class object (a look-alike class named the
    same is NOT one of them): they only recompute ``.weight``, which the rule then reads."""
    import importlib

    from torch.nn.utils import prune

    spectral = importlib.import_module("torch.nn.utils.spectral_norm").SpectralNorm
    weight_norm = importlib.import_module("torch.nn.utils.weight_norm").WeightNorm
    pruning = (prune.Identity, prune.RandomUnstructured, prune.L1Unstructured,
               prune.RandomStructured, prune.LnStructured, prune.CustomFromMask,
               prune.PruningContainer)
    return (spectral, weight_norm, *pruning)


_LEGITIMATE_PRE_HOOKS = _legitimate_pre_hook_types()

# Global (all-module) hooks that run during a forward pass and may change its values.
_GLOBAL_FORWARD_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks")


def _calls_forward_plainly(module: nn.Module) -> bool:
    """True if calling ``module`` runs its class's ``forward`` through nn.Module.__call__."""
    from torch import fx

    if "forward" in vars(module):  # ``module.forward = wrapper`` (the accelerate pattern)
        return False
    call = type(module).__call__
    if call is nn.Module.__call__:
        return True
    # GraphModule installs its own __call__ that only forwards to nn.Module.__call__ unless
    # the class defined one itself (then ``cls_call`` is set).
    wrapped = getattr(module, "_wrapped_call", None)
    return isinstance(module, fx.GraphModule) and getattr(wrapped, "cls_call", True) is None


def check_forward_intact(module: nn.Module, path: str) -> None:
    """Refuse a module whose call may compute something else than its class's ``forward``:
    forward hooks, forward pre-hooks other than torch's reparametrizations (spectral_norm,
    weight_norm, pruning; identified by their class object), an instance attribute
    ``forward`` or an overridden ``__call__``. The rules and the tracer read ``forward``."""
    what = f"module {path!r} ({type(module).__name__})"
    if not _calls_forward_plainly(module):
        raise UnsupportedLayerError(
            f"{what} replaces forward on the instance or overrides __call__, so calling it may "
            "compute something else than its forward; lipcert cannot bound it. Remove the "
            "wrapper (e.g. accelerate's remove_hook_from_module) before computing the bound."
        )
    pre = [h for h in module._forward_pre_hooks.values()
           if type(h) not in _LEGITIMATE_PRE_HOOKS]
    if module._forward_hooks or pre:
        raise UnsupportedLayerError(
            f"{what} has forward hooks, which may change its output; lipcert cannot bound it. "
            "Remove the hooks before computing the bound."
        )


def check_no_global_hooks() -> None:
    """Refuse while global module hooks (``register_module_forward_hook`` /
    ``register_module_forward_pre_hook``) are installed: they run on every module call."""
    from torch.nn.modules import module as module_py

    if any(getattr(module_py, name, None) for name in _GLOBAL_FORWARD_HOOKS):
        raise UnsupportedLayerError(
            "global module forward hooks are installed (torch.nn.modules.module."
            "register_module_forward_hook / register_module_forward_pre_hook); they run on "
            "every module and may change its output, so lipcert cannot bound the model. "
            "Remove them (handle.remove()) before computing the bound."
        )


def apply_rule(module: nn.Module, input_shape: torch.Size, path: str,
               input_dtype: torch.dtype | None = None) -> NormBound:
    """Run the rule of ``module`` (named ``path``) and check what it returns.

    ``input_dtype`` is the dtype the module computes in (rules read it with
    :func:`input_dtype`; unknown means the strictest, float64). Raises
    :class:`UnsupportedLayerError` without a rule, :class:`UnsoundRequestError` for an
    estimate, and :class:`BadInputError` for NaN/Inf weights or bounds.
    """
    rule = find_rule(module)
    if rule is None:
        name = type(module).__name__
        raise UnsupportedLayerError(
            f"no Lipschitz rule for module {path!r} of type {name}. "
            + HOW_TO_ADD.format(name=f"{type(module).__module__}.{name}")
        )
    check_no_global_hooks()
    check_forward_intact(module, path)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point():
            check_finite(tensor, f"{path}.{name}")
    token = _INPUT_DTYPE.set(input_dtype)
    try:
        bound = rule(module, torch.Size(input_shape))
    finally:
        _INPUT_DTYPE.reset(token)
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
    if bound.value.numel() != 1 or float(bound.value.detach()) < 0:
        raise BadInputError(
            f"the Lipschitz rule of {path!r} returned {bound.value.detach().tolist()}; a "
            "Lipschitz bound is one number >= 0 (fix the registered rule)."
        )
    return bound
