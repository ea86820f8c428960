"""Lipschitz bound of a whole network, combined over its torch.fx graph.

Following Lipschitz-Margin Training (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034), each
node gets an upper bound of the l2 Lipschitz constant of the map from one input sample to
that node's output: a module or function multiplies the bound of its input by its own
(:mod:`lipcert.bounds.rules`, :mod:`lipcert.bounds.ops`), ``x + f(x)`` adds the bounds,
concatenation takes the root of the sum of squares, and nodes that do not depend on the
input contribute nothing. The example input is run through the graph at the same time, so
convolution rules see the real input size. Every bound is a differentiable tensor.
"""

from __future__ import annotations

import inspect
import operator
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

import lipcert.bounds.builtin as builtin
from lipcert.bounds.ops import HANDLERS, OpContext, Step, describe, is_shape_query
from lipcert.bounds.report import LastLinear, LayerBound, LipschitzReport, model_fingerprint
from lipcert.bounds.rules import (
    apply_rule,
    check_forward_intact,
    check_no_global_hooks,
    find_rule,
    has_rule,
)
from lipcert.errors import (
    BadInputError,
    LipcertError,
    UnsoundRequestError,
    UnsupportedLayerError,
    check_finite,
    error_text,
)
from lipcert.linalg.result import NormBound

PROBE_BATCH = 2  # samples run through the graph: enough to tell the batch dimension apart


# Augmented assignments. A plain torch.fx.Proxy has no ``__iadd__``, so Python runs ``a += b``
# as ``a = a + b`` while tracing: the graph would compute out of place, and miss the change
# to every tensor sharing memory with ``a`` (``v = h[:, :2]; v *= 10`` scales part of ``h``).
_AUGMENTED = {f"__{name}__": getattr(operator, name) for name in (
    "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior",
    "ixor", "ilshift", "irshift")}


def _augmented(target):
    def method(self, other):
        return self.tracer.create_proxy("call_function", target, (self, other), {})

    return method


_InPlaceProxy = type("_InPlaceProxy", (fx.Proxy,),
                     {name: _augmented(target) for name, target in _AUGMENTED.items()})


class _LeafTracer(fx.Tracer):
    """Keeps every module that has a Lipschitz rule as one node (never traced into), and
    records augmented assignments (``a += b``) as the in-place operations they are."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return has_rule(module) or super().is_leaf_module(module, qualified_name)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _InPlaceProxy(node, self)


def _concrete_args(model: nn.Module) -> dict[str, Any]:
    """Defaults of every forward argument after the input (they are fixed while tracing)."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {}
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise BadInputError(
                f"{type(model).__name__}.forward needs argument {p.name!r} besides the input; "
                "lipcert bounds models of one tensor input (wrap the model to fix the others)."
            )
        fixed[p.name] = p.default
    return fixed


def _trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model``, with every module that has a rule kept as a leaf."""
    graph = _LeafTracer().trace(model, concrete_args=_concrete_args(model) or None)
    return fx.GraphModule(model, graph)


def _affine_weight(module: nn.Module) -> torch.Tensor | None:
    """W of a module computing ``W h + b`` (nn.Linear or a module with ``linear_weight()``)."""
    if callable(getattr(module, "linear_weight", None)):
        return module.linear_weight()
    if isinstance(module, nn.Linear) and find_rule(module) is builtin.linear_map_rule:
        return module.weight
    return None


class _BoundInterpreter(fx.Interpreter):
    """Runs the example input through the graph and bounds every input-dependent node."""

    def __init__(self, graph_module: fx.GraphModule, prefix: str = ""):
        super().__init__(graph_module)
        self.extra_traceback = False  # lipcert errors stay one line (no fx node dump)
        self.prefix = prefix
        self.running: dict[fx.Node, torch.Tensor] = {}
        self.steps: dict[fx.Node, Step] = {}
        self.records: list[LayerBound] = []
        self.batch = 0
        self.order = {n: i for i, n in enumerate(graph_module.graph.nodes)}  # topological

    def run_node(self, node: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        result = super().run_node(node)
        if node.op == "placeholder":
            if not self.running:
                self.batch = result.shape[0]
                self.running[node] = torch.ones((), dtype=torch.float64, device=result.device)
        elif node.op != "output" and not is_shape_query(node):
            if any(n in self.running for n in node.all_input_nodes):
                self._bound(node, args, kwargs, result)
        return result

    def _bound(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> None:
        if kwargs.get("out") is not None:
            raise UnsupportedLayerError(
                f"node {self.prefix}{node.name!r} ({describe(node)}) writes into another tensor "
                "(out=...); lipcert cannot follow that write. Use the returned value."
            )
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            step = self._module_step(node, module, args, kwargs, result)
            kind = type(module).__name__
            inplace = getattr(module, "inplace", False)
        elif node.op in ("call_function", "call_method") and node.target in HANDLERS:
            ctx = OpContext(node, args, kwargs, result, self.running)
            step, kind = HANDLERS[node.target](ctx), describe(node)
            inplace = ctx.in_place()
        else:
            raise UnsupportedLayerError(
                f"node {self.prefix}{node.name!r} ({describe(node)}, op {node.op}) depends on the "
                "input and has no Lipschitz rule. Use a torch.nn module that has one, or wrap "
                "the computation in a module and add lipcert.bounds.register_rule(ModuleType, "
                "fn) (fn(module, input_shape) -> NormBound upper bound)."
            )
        self._check_result(node, result)
        check_finite(step.running, f"the Lipschitz bound at node {self.prefix}{node.name!r} "
                                   "(NaN/Inf weights?)")
        if inplace:
            self._overwrite(node, args, step.running)
        self.running[node] = step.running
        self.steps[node] = step
        name = node.target if node.op == "call_module" else node.name
        local, method = float(step.local.detach()), step.method
        if step.combine:
            local, method = self._join_factor(node, step)
        self.records.append(LayerBound(f"{self.prefix}{name}", kind, local, step.guarantee,
                                       method, float(step.running.detach())))

    def _join_factor(self, node: fx.Node, step: Step) -> tuple[float, str]:
        """For a node joining several input-dependent operands (``+``, ``cat``): its bound
        relative to the nearest node every operand depends on (the fork of a residual block,
        so ``x + f(x)`` reads ``1 + ||f||``), and the method naming that node."""
        operands = [n for n in node.all_input_nodes if n in self.running]
        shared = set.intersection(*(self._ancestors(n) for n in operands))
        fork = max(shared, key=self.order.__getitem__)
        before = float(self.running[fork].detach())
        after = float(step.running.detach())
        factor = after / before if before > 0 else 0.0
        where = "the input" if fork.op == "placeholder" else repr(f"{self.prefix}{fork.name}")
        return factor, f"{step.method}, over {where}"

    def _ancestors(self, node: fx.Node) -> set[fx.Node]:
        """``node`` and every input-dependent node it is computed from."""
        seen, todo = set(), [node]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo += [n for n in current.all_input_nodes if n in self.running]
        return seen

    def _overwrite(self, node: fx.Node, args: tuple, bound: torch.Tensor) -> None:
        """The op at ``node`` overwrote its first argument with its output (bound ``bound``).

        Later readers of that argument see the output, so its bound becomes ``bound``. Other
        tensors sharing its memory (views such as ``h.view(...)``, ``h[:, 1:]``, or the base a
        view was taken from) changed too: only the entries they share with the argument did,
        so ``sqrt(old^2 + bound^2)`` bounds them (old entries, overwritten entries).
        """
        source = node.args[0] if node.args else None
        target = args[0] if args else None
        if not isinstance(source, fx.Node) or not torch.is_tensor(target):
            raise UnsupportedLayerError(
                f"node {self.prefix}{node.name!r} ({describe(node)}) works in place on an "
                "argument lipcert cannot follow; use the out-of-place form."
            )
        old = self.running.get(source)
        if old is None:
            # Writing input-dependent values into a constant (a buffer, zeros_like(x)): a later
            # read of that memory (e.g. the buffer fetched again) would pass for a constant.
            raise UnsupportedLayerError(
                f"node {self.prefix}{node.name!r} ({describe(node)}) writes input-dependent "
                "values in place into a tensor that did not depend on the input; lipcert "
                "cannot follow that write. Use the out-of-place form."
            )
        self.running[source] = torch.maximum(old, bound)
        memory = target.untyped_storage().data_ptr()
        for other, value in list(self.env.items()):
            if other is source or other is node:
                continue
            # tuples too: the pieces of split / chunk / unbind are views of their input,
            # and a later ``pieces[i]`` reads the tuple node's bound
            if any(t.untyped_storage().data_ptr() == memory for t in _tensors_in(value)):
                # a constant sharing the memory now depends on the input too (old bound 0)
                known = self.running.get(other)
                self.running[other] = bound if known is None else torch.sqrt(known ** 2
                                                                             + bound ** 2)

    def _module_step(self, node: fx.Node, module: nn.Module, args: tuple, kwargs: dict,
                     result: Any) -> Step:
        path = f"{self.prefix}{node.target}"
        source = node.args[0] if node.args else None
        extra = [n for n in node.all_input_nodes if n in self.running and n is not source]
        if source not in self.running or extra:
            raise UnsupportedLayerError(
                f"module {path!r} takes several input-dependent arguments; lipcert's module "
                "rules bound maps of one tensor."
            )
        bound = apply_rule(module, args[0].shape, path, args[0].dtype)
        if len(args) > 1 or kwargs:
            bound = self._called_with_arguments(module, path, args, kwargs, result)
        local = bound.value.to(dtype=torch.float64, device=self.running[source].device)
        return Step(local * self.running[source], local, bound.guarantee, bound.method,
                    isometry=isinstance(module, builtin.ISOMETRY_TYPES),
                    weight=_affine_weight(module))

    def _called_with_arguments(self, module: nn.Module, path: str, args: tuple, kwargs: dict,
                               result: Any) -> NormBound:
        """The bound of ``module(x, *more)``: module rules bound the plain call ``module(x)``,
        so extra arguments need a rule of their own (builtin.CALL_ARGUMENT_RULES)."""
        rule = builtin.CALL_ARGUMENT_RULES.get(type(module))
        if rule is None:
            raise UnsupportedLayerError(
                f"module {path!r} ({type(module).__name__}) is called with arguments besides "
                f"its input ({len(args) - 1} positional, keywords {sorted(kwargs)}); its rule "
                "bounds the plain call module(x). Call it with the input only."
            )
        bound = rule(module, args[0].shape, result.shape, args[1:], kwargs)
        if not bound.is_sound:
            raise UnsoundRequestError(f"the rule of {path!r} gave an estimate.")
        check_finite(bound.value, f"the Lipschitz bound of {path!r}")
        return bound

    def _check_result(self, node: fx.Node, result: Any) -> None:
        pieces = result if isinstance(result, (tuple, list)) else [result]
        if isinstance(result, (tuple, list)):
            # a tuple may carry integer pieces (sort indices): they are refused where a
            # later node reads them, as that node's result
            pieces = [p for p in result if torch.is_tensor(p) and p.is_floating_point()] or [None]
        for piece in pieces:
            if not (torch.is_tensor(piece) and piece.is_floating_point()):
                raise UnsupportedLayerError(
                    f"node {self.prefix}{node.name!r} ({describe(node)}) turns the input into "
                    f"{type(piece).__name__} values that are not floating-point tensors; its "
                    "output is not a Lipschitz function of the input."
                )
            if _below_float32(piece.dtype):
                # Any op that rounds below float32 (a cast, sum/mean/softmax(dtype=...)):
                # rounding is a step function, not Lipschitz at the scale of certificates.
                raise UnsupportedLayerError(
                    f"node {self.prefix}{node.name!r} ({describe(node)}) computes in "
                    f"{piece.dtype}; rounding below float32 precision is not Lipschitz at the "
                    "scale of certificates. Keep the computation in float32 or float64."
                )
            if piece.dim() == 0 or piece.shape[0] != self.batch:
                raise UnsupportedLayerError(
                    f"node {self.prefix}{node.name!r} ({describe(node)}) changes the batch "
                    "dimension (dim 0) of its input; one sample's output would depend on "
                    "the others."
                )


def _tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors in a node's value: itself, or the items of a (nested) tuple / list / dict."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors_in(item)]
    return []


@dataclass
class _Partial:
    """Bound of one (sub)model: its value, the steps, its output on the probe batch."""

    value: torch.Tensor
    records: list[LayerBound]
    steps: list[Step]
    output: torch.Tensor
    last_linear: LastLinear | None
    traced: bool = True
    caveats: tuple[str, ...] = ()


def _logits_are_output_of(node: fx.Node, interpreter: _BoundInterpreter) -> bool:
    """True if the returned values are exactly what ``node`` (an affine step) computed.

    The pairwise last-layer certificate reads ``node``'s weight rows, so it only holds when
    nothing ran on the input-dependent values after ``node``: no later node depends on the
    input (an in-place ``out.view(...).mul_(10)`` or ``relu_(out)`` after the last Linear
    changes the returned tensor through shared memory), the bound of ``node`` was not
    raised by an in-place write, and its input is a bounded node.
    """
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node) or source not in interpreter.running:
        return False
    if interpreter.running.get(node) is not interpreter.steps[node].running:
        return False
    later = False
    for other in node.graph.nodes:
        if other is node:
            later = True
        elif later and other.op != "output" and (other in interpreter.running
                                                  or other in interpreter.steps):
            return False
    return True


class _FrozenState:
    """Snapshot of a model's buffers (power-iteration vectors and the like), so that the
    extra calls the checks make start from, and leave, the state the bound is computed at."""

    def __init__(self, model: nn.Module):
        self.saved = [(b, b.detach().clone()) for b in model.buffers()]

    def reset(self) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)


def _check_graph_reproduces(model: nn.Module, direct: Any, traced: torch.Tensor,
                            prefix: str) -> None:
    """The traced graph must compute what calling the model computes on the example.

    Tracing records tensor operations only: Python-level state that changes the result
    without appearing in the graph (a ``torch.autocast`` block inside forward, a context
    manager, a global flag read at call time) would make the bound describe another function.
    """
    same = (torch.is_tensor(direct) and direct.shape == traced.shape
            and direct.dtype == traced.dtype)
    if same:
        atol = 1e-5 * (1.0 + float(traced.detach().abs().max()))
        same = torch.allclose(direct.detach(), traced.detach(), rtol=1e-4, atol=atol)
    if not same:
        raise UnsupportedLayerError(
            f"the torch.fx graph of {prefix.rstrip('.') or type(model).__name__!r} does not "
            "reproduce what calling it computes on the example input (a torch.autocast or "
            "other context manager inside forward, or state read at call time, is not "
            "recorded by tracing); lipcert cannot bound it. Move such code out of forward."
        )


def _bound_traced(model: nn.Module, graph_module: fx.GraphModule, x: torch.Tensor,
                  prefix: str) -> _Partial:
    state = _FrozenState(model)
    with torch.no_grad():
        direct = model(x.clone())  # what calling the model computes, for the check below
    state.reset()
    interpreter = _BoundInterpreter(graph_module, prefix)
    output = interpreter.run(x)
    out_node = next(n for n in graph_module.graph.nodes if n.op == "output")
    returned = out_node.args[0]
    if not isinstance(returned, fx.Node) or not torch.is_tensor(output):
        raise BadInputError(
            f"{type(model).__name__} returns {type(output).__name__}, not a single tensor of "
            "shape (batch, ...); lipcert bounds models that return one tensor (e.g. logits)."
        )
    _check_graph_reproduces(model, direct, output, prefix)
    if returned not in interpreter.running:
        raise BadInputError(f"the output of {type(model).__name__} does not depend on its input.")
    last_linear = None
    step = interpreter.steps.get(returned)
    if step is not None and step.weight is not None and _logits_are_output_of(returned,
                                                                              interpreter):
        source = returned.args[0]
        name = returned.target if returned.op == "call_module" else returned.name
        last_linear = LastLinear(f"{prefix}{name}", step.weight, interpreter.running[source])
    return _Partial(interpreter.running[returned], interpreter.records,
                    list(interpreter.steps.values()), output, last_linear)


def _ordered_children(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Sub-modules in registration order, with ModuleList/ModuleDict containers opened."""
    found = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            found += _ordered_children(child, f"{prefix}{name}.")
        else:
            found.append((f"{prefix}{name}", child))
    return found


CHAIN_CHECK_SCALES = (1e-2, 1.0, 1e2)
CHAIN_CHECK_BATCHES = (1, PROBE_BATCH, 3, 64)  # and the caller's batch size


def _check_batches(caller_batch: int) -> tuple[int, ...]:
    return tuple(sorted({*CHAIN_CHECK_BATCHES, caller_batch}))


def _chain_caveat(model: nn.Module, caller_batch: int) -> str:
    return (f"{type(model).__name__}: torch.fx could not trace it; its children were bounded "
            "in registration order, checked to reproduce its output at batch sizes "
            f"{list(_check_batches(caller_batch))} and input scales {list(CHAIN_CHECK_SCALES)} "
            "(seeded random inputs). A forward that branches on other batch sizes, other input "
            "values or outside state is not excluded.")


def _chain_reproduces(model: nn.Module, children: list[nn.Module], x: torch.Tensor,
                      caller_batch: int) -> bool:
    """True if the children applied in order match ``model`` on seeded random inputs of
    several scales and several batch sizes (the caller's included). An untraceable forward
    may branch on the input's values (``if x.abs().max() > 5: ...``) or its batch size
    (``if x.shape[0] > 32: ...``), which the example input alone would not reveal; this
    catches the common cases (it cannot prove that no branch exists)."""
    generator = torch.Generator().manual_seed(0)
    spread = 1.0 + float(x.detach().abs().max())
    cases = [(scale, batch) for batch in _check_batches(caller_batch)
             for scale in CHAIN_CHECK_SCALES]
    for scale, batch in cases:
        z = torch.randn((batch, *x.shape[1:]), generator=generator, dtype=torch.float64)
        z = (z * (scale * spread)).to(dtype=x.dtype, device=x.device)
        try:
            with torch.no_grad():
                expected = model(z)
                hidden = z
                for child in children:
                    hidden = child(hidden)
        except Exception:  # noqa: BLE001 (any failure means the chain is not the model)
            return False
        if not (torch.is_tensor(expected) and torch.is_tensor(hidden)
                and expected.shape == hidden.shape):
            return False
        atol = 1e-5 * (1.0 + float(expected.abs().max()))
        if not torch.allclose(expected, hidden, rtol=1e-4, atol=atol):
            return False
    return True


def _bound_in_order(model: nn.Module, x: torch.Tensor, prefix: str, error: Exception,
                    caller_batch: int) -> _Partial:
    """Fallback when fx cannot trace ``model``: its children, in registration order."""
    children = _ordered_children(model)
    if not children:
        raise UnsupportedLayerError(
            f"torch.fx cannot trace {prefix or type(model).__name__!r} ({error}) and it has no "
            "sub-modules to bound in order. Add lipcert.bounds.register_rule("
            f"{type(model).__name__}, fn) for it."
        ) from error
    value = torch.ones((), dtype=torch.float64, device=x.device)
    records: list[LayerBound] = []
    steps: list[Step] = []
    hidden = x
    last_linear = None
    traced = False
    caveats: tuple[str, ...] = ()
    for name, child in children:
        try:
            part = _bound_module(child, hidden, f"{prefix}{name}.", caller_batch)
        except LipcertError:
            raise
        except Exception as failure:  # the children do not chain: not a sequential model
            raise UnsupportedLayerError(
                f"torch.fx cannot trace {type(model).__name__} ({error}), and its children do "
                f"not chain in registration order ({failure}). Make forward traceable or add "
                f"lipcert.bounds.register_rule({type(model).__name__}, fn)."
            ) from failure
        before = value
        last_linear = None if part.last_linear is None else LastLinear(
            part.last_linear.name, part.last_linear.weight, part.last_linear.input_bound * before)
        value = before * part.value
        records += [LayerBound(r.name, r.kind, r.bound, r.guarantee, r.method,
                               r.running * float(before.detach())) for r in part.records]
        steps += part.steps
        caveats += part.caveats
        hidden = part.output
    if len(children) > 1:  # a composition of several sub-bounds is no longer exact
        steps.append(Step(value, value, "upper", "composition", combine=True))
    expected = model(x)
    if not (torch.is_tensor(expected) and torch.is_tensor(hidden) and expected.shape == hidden.shape
            and torch.allclose(expected, hidden, rtol=1e-4, atol=1e-5)
            and _chain_reproduces(model, [child for _, child in children], x, caller_batch)):
        raise UnsupportedLayerError(
            f"torch.fx cannot trace {type(model).__name__} ({error}), and applying its children "
            "in order does not reproduce its output, so lipcert cannot bound it. Make forward "
            f"traceable or add lipcert.bounds.register_rule({type(model).__name__}, fn)."
        ) from error
    warnings.warn(
        f"torch.fx could not trace {type(model).__name__} ({error}); bounded its children in "
        "registration order instead (checked against its output on the example input and on "
        f"random inputs at batch sizes {list(_check_batches(caller_batch))}; see the report's "
        "caveats for what this cannot exclude).",
        stacklevel=3,
    )
    return _Partial(value, records, steps, expected, last_linear, traced,
                    (*caveats, _chain_caveat(model, caller_batch)))


def _bound_leaf(model: nn.Module, x: torch.Tensor, name: str) -> _Partial:
    """A module with a rule of its own, bounded as one step."""
    # Run the module first: reparametrization hooks (torch's spectral_norm / weight_norm)
    # recompute .weight on each forward, and the rule must read the weight the module uses.
    output = model(x)
    bound = apply_rule(model, x.shape, name, x.dtype)
    value = bound.value.to(dtype=torch.float64, device=x.device)
    if not torch.is_tensor(output) or output.dim() == 0 or output.shape[0] != x.shape[0]:
        raise BadInputError(f"{name!r} must return one tensor of shape (batch, ...).")
    if _below_float32(output.dtype):
        raise UnsupportedLayerError(f"{name!r} computes in {output.dtype}; lipcert bounds "
                                    "models computing in float32 or float64.")
    weight = _affine_weight(model)
    last_linear = None if weight is None else LastLinear(name, weight, torch.ones_like(value))
    step = Step(value, value, bound.guarantee, bound.method,
                isometry=isinstance(model, builtin.ISOMETRY_TYPES), weight=weight)
    record = LayerBound(name, type(model).__name__, float(value.detach()), bound.guarantee,
                        bound.method, float(value.detach()))
    return _Partial(value, [record], [step], output, last_linear)


def _bound_module(model: nn.Module, x: torch.Tensor, prefix: str,
                  caller_batch: int = PROBE_BATCH) -> _Partial:
    if has_rule(model):
        return _bound_leaf(model, x, prefix.rstrip(".") or type(model).__name__)
    try:
        graph_module = _trace(model)
    except LipcertError:
        raise
    except Exception as error:  # torch.fx raises many types for untraceable Python
        return _bound_in_order(model, x, prefix, error, caller_batch)
    return _bound_traced(model, graph_module, x, prefix)


def _guarantee(steps: list[Step]) -> str:
    """"exact" only for one exact step between bijective isometries (a single linear map)."""
    if any(s.combine or s.guarantee != "exact" for s in steps):
        return "upper"
    return "exact" if sum(not s.isometry for s in steps) <= 1 else "upper"


def _below_float32(dtype: torch.dtype) -> bool:
    """True for floating dtypes less precise than float32 (float16, bfloat16, float8)."""
    return dtype.is_floating_point and torch.finfo(dtype).eps > torch.finfo(torch.float32).eps


def _check_precision(module: nn.Module, path: str) -> None:
    """Refuse weights below float32: rounding to half / bfloat16 is a step function whose
    jumps (a relative 1e-3) dwarf the margins certificates rely on."""
    for name, tensor in [*module.named_parameters(recurse=False),
                         *module.named_buffers(recurse=False)]:
        if _below_float32(tensor.dtype):
            raise UnsupportedLayerError(
                f"{path}.{name} is {tensor.dtype}; lipcert bounds models computing in float32 "
                "or float64 (rounding below float32 precision is not Lipschitz at the scale of "
                "certificates). Call model.float() (or .double()) first."
            )


def _probe(example_input: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(example_input) or not example_input.is_floating_point():
        raise BadInputError("example_input must be a floating-point tensor of shape (batch, ...).")
    if example_input.dim() < 1 or example_input.shape[0] == 0:
        raise BadInputError("example_input needs a batch dimension with at least one sample.")
    check_finite(example_input, "example_input")
    if _below_float32(example_input.dtype):
        raise UnsupportedLayerError(
            f"example_input is {example_input.dtype}; lipcert bounds models computing in "
            "float32 or float64. Pass a float32 (or float64) example and model."
        )
    probe = example_input[:PROBE_BATCH]
    return probe.repeat(PROBE_BATCH, *([1] * (probe.dim() - 1)))[:PROBE_BATCH]


def _in_caller_terms(message: str, probe: torch.Tensor, example_input: torch.Tensor) -> str:
    """``message`` with the probe's shape (lipcert traces a batch of ``PROBE_BATCH``) written
    as the shape of the example the caller passed, and the probe's batch size in the shapes
    that rules report as ``got (...)`` / ``input_shape (...)`` written as the caller's."""
    message = message.replace(str(tuple(probe.shape)), str(tuple(example_input.shape)))
    return re.sub(rf"(got |input_shape )\({len(probe)}, ", rf"\g<1>({len(example_input)}, ",
                  message)


def _model_failure(model: nn.Module, error: Exception, probe: torch.Tensor,
                   example_input: torch.Tensor) -> str:
    """One line saying that ``model`` fails on the example, in the words of the failure on
    the caller's own batch when the model fails there too (so sizes are the caller's)."""
    shape = tuple(example_input.shape)
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as own:  # noqa: BLE001 (any failure of the user's model)
        return (f"{type(model).__name__} fails on the example input of shape {shape}: "
                f"{type(own).__name__}: {error_text(own)}")
    return (f"{type(model).__name__} fails on lipcert's probe of the example input (shape "
            f"{tuple(probe.shape)}, a batch of {len(probe)} drawn from yours, {shape}): "
            f"{type(error).__name__}: {error_text(error)}")


INDEPENDENCE_BATCH = 3  # not the probe's batch size: hard-coded batch sizes show up


def _check_per_sample(model: nn.Module, example_input: torch.Tensor) -> None:
    """Each sample's output must depend on that sample only: a batch of
    ``INDEPENDENCE_BATCH`` distinct samples (the example's first ones, completed by seeded
    perturbations) must give, row by row, what each sample gives alone. This catches what the
    graph rules cannot see at the probe's batch size, such as ``x.expand(2, -1, -1)`` or
    ``x.reshape(2, -1)`` (a new leading dimension that happens to match the probe's batch)."""
    z = example_input[:INDEPENDENCE_BATCH]
    if len(z) < INDEPENDENCE_BATCH:
        generator = torch.Generator().manual_seed(0)
        spread = 1.0 + float(z.detach().abs().max())
        noise = torch.randn((INDEPENDENCE_BATCH - len(z), *z.shape[1:]), generator=generator,
                            dtype=torch.float64)
        extra = z[:1] + (0.1 * spread * noise).to(dtype=z.dtype, device=z.device)
        z = torch.cat([z, extra])
    name = type(model).__name__
    state = _FrozenState(model)

    def call(batch: torch.Tensor) -> Any:
        state.reset()
        return model(batch.clone())

    try:
        with torch.no_grad():
            together = call(z)
            alone = [call(z[i:i + 1]) for i in range(INDEPENDENCE_BATCH)]
    except LipcertError:
        raise
    except Exception as error:  # noqa: BLE001 (a model tied to one batch size)
        raise UnsupportedLayerError(
            f"{name} fails on a batch of {INDEPENDENCE_BATCH} or of 1 sample ({error}); "
            "lipcert bounds models that map each sample on its own, at any batch size."
        ) from error
    finally:
        state.reset()
    same = torch.is_tensor(together) and together.dim() > 0 and \
        together.shape[0] == INDEPENDENCE_BATCH
    for i, row in enumerate(alone):
        if not same:
            break
        same = (torch.is_tensor(row) and row.numel() == together[i].numel()
                and row.dtype == together.dtype)
        if same:
            atol = 1e-5 * (1.0 + float(together.detach().abs().max()))
            same = torch.allclose(row.reshape(together[i].shape), together[i], rtol=1e-4,
                                  atol=atol)
    if not same:
        raise UnsupportedLayerError(
            f"{name} does not map each sample on its own: its output on a batch differs from "
            "its outputs on the samples one at a time (it mixes samples or depends on the "
            "batch size); a per-sample Lipschitz bound would not describe it."
        )


def lipschitz_bound(model: nn.Module, example_input: torch.Tensor) -> LipschitzReport:
    """Upper bound of the l2 Lipschitz constant of ``model`` on one sample.

    The model is traced with torch.fx (modules with a rule stay whole), the example input
    (shape (batch, ...); its values do not matter, its shape does) is run through the graph,
    and the per-node rules are combined as in LMT (arXiv 1802.04034). If torch.fx cannot trace
    the model, its children are bounded in registration order, which is checked against the
    model's output at several batch sizes and input scales and reported (``traced=False``,
    a warning, and ``caveats`` saying what that check cannot exclude).

    The bound describes what calling the model computes, so everything that could make the
    call differ from the rules is refused: forward hooks and pre-hooks on any module (torch's
    own spectral_norm / weight_norm / pruning pre-hooks excepted, identified by class), global
    module hooks, an instance ``forward`` or overridden ``__call__``, a traced graph that does
    not reproduce the call (autocast inside forward), computation below float32, and outputs
    that depend on other samples of the batch.

    Returns:
        a :class:`LipschitzReport`; ``.value`` is differentiable w.r.t. the weights and never
        below the true constant (``guarantee`` "upper", or "exact" for one linear map).

    Raises:
        UnsupportedLayerError: a node depending on the input has no rule (the message names it
            and explains ``lipcert.bounds.register_rule``), mixes samples across the batch,
            or one of the refusals above.
        UnsoundRequestError: a rule gave an estimate.
        BadInputError: NaN/Inf weights or input, or a model output that is not one tensor.
    """
    if not isinstance(model, nn.Module):
        raise BadInputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    check_no_global_hooks()
    for path, module in model.named_modules():
        check_forward_intact(module, path or type(model).__name__)
        _check_precision(module, path or type(model).__name__)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            # Refuse before the example runs: a forward pass would update its running stats.
            raise UnsupportedLayerError(
                f"batch norm {path or type(model).__name__!r} is in training mode, where one "
                "sample's output depends on the batch; call model.eval() first."
            )
    probe = _probe(example_input)
    try:
        part = _bound_module(model, probe, "", int(example_input.shape[0]))
    except LipcertError as error:
        error.args = (_in_caller_terms(error_text(error), probe, example_input),)
        raise
    except Exception as error:  # the model itself fails on the (probe of the) example
        raise BadInputError(_model_failure(model, error, probe, example_input)) from error
    _check_per_sample(model, example_input)
    check_finite(part.output, "the model output on the example input")
    # Without a trace, "the logits are the last child's output" was only checked numerically
    # (to rtol 1e-4, on a few inputs): not enough for the pairwise form, which needs equality.
    last_linear = part.last_linear if part.traced else None
    return LipschitzReport(part.value, _guarantee(part.steps), part.records, part.traced,
                           last_linear, tuple(example_input.shape[1:]), caveats=part.caveats,
                           model_state=model_fingerprint(model))
