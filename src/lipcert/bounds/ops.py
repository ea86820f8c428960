"""Lipschitz rules of the functions and tensor methods that appear in a traced graph.

Each handler receives an :class:`OpContext` (the node, its concrete arguments in the traced
example, the bounds of its input-dependent arguments) and returns a :class:`Step`: the bound
from the model input to this node's output. Composition multiplies, ``+``/``-`` add the
bounds of both operands, concatenation along a non-batch dimension takes the root of the
sum of squares (LMT, Tsuzuku et al. 2018, arXiv 1802.04034), scaling by a constant multiplies
by its largest magnitude, and reshapes are isometries. Anything that mixes samples across
the batch dimension is refused.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function

from lipcert.bounds.builtin import GELU_SLOPE, SILU_SLOPE, softplus_slope
from lipcert.bounds.rules import apply_rule
from lipcert.errors import BadInputError, UnsupportedLayerError, check_finite
from lipcert.linalg import dense_norm


@dataclass(frozen=True)
class Step:
    """The bound at one node: ``running`` from the model input, ``local`` for the op alone."""

    running: torch.Tensor
    local: torch.Tensor
    guarantee: str
    method: str
    isometry: bool = False
    combine: bool = False
    weight: torch.Tensor | None = None  # set for affine maps (last-layer certificates)


@dataclass
class OpContext:
    """What a handler may look at: the node, its concrete arguments and the known bounds."""

    node: fx.Node
    args: tuple
    kwargs: dict
    result: Any
    running: dict[fx.Node, torch.Tensor]

    @property
    def name(self) -> str:
        return self.node.name

    def bound_of(self, arg: Any) -> torch.Tensor | None:
        """Bound of an argument (a graph node), or None if it does not depend on the input."""
        return self.running.get(arg) if isinstance(arg, fx.Node) else None

    def as_bound(self, value: float | torch.Tensor) -> torch.Tensor:
        """``value`` as a 0-dim tensor in the dtype/device of the bounds (keeps gradients)."""
        like = next(iter(self.running.values()))
        if torch.is_tensor(value):
            return value.to(dtype=like.dtype, device=like.device).reshape(())
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)

    def normalized(self) -> dict[str, Any]:
        """Concrete arguments by name (``input`` is the tensor operated on)."""
        target = self.node.target
        if isinstance(target, str):
            target = getattr(torch, target, None)
        found = None
        if target is not None:
            try:
                found = normalize_function(target, self.args, self.kwargs,
                                           normalize_to_only_use_kwargs=True)
            except RuntimeError:
                found = None
        if found is None:
            raise UnsupportedLayerError(
                f"node {self.name!r}: could not read the arguments of {describe(self.node)}; "
                "use the equivalent torch.nn module instead."
            )
        return dict(found.kwargs)

    def in_place(self) -> bool:
        """True if the op overwrites its input (``inplace=True``, by keyword or position)."""
        if self.kwargs.get("inplace", False) or self.node.target in AUGMENTED_OPS:
            return True
        if getattr(self.node.target, "__module__", None) != "torch.nn.functional":
            return False
        return bool(self.normalized().get("inplace", False))

    def dep_nodes(self, obj: Any) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg(obj, lambda n: found.append(n) if n in self.running else None)
        return found

    def unary(self, local: float | torch.Tensor, guarantee: str, method: str,
              isometry: bool = False, weight: torch.Tensor | None = None) -> Step:
        """Step of an op that depends on the input only through its first argument."""
        first = self.node.args[0] if self.node.args else self.node.kwargs.get("input")
        others = self.dep_nodes((self.node.args[1:], {k: v for k, v in self.node.kwargs.items()
                                                      if k != "input"}))
        if first not in self.running or others:
            raise UnsupportedLayerError(
                f"node {self.name!r} ({describe(self.node)}) takes more than one input-dependent "
                "argument in a position lipcert has no rule for."
            )
        local = self.as_bound(local)
        return Step(local * self.running[first], local, guarantee, method, isometry, False, weight)

    def input_value(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["input"]


Handler = Callable[[OpContext], Step]

# Augmented assignments (``a += b``), recorded by the tracer as in-place operations on ``a``.
AUGMENTED_OPS = (operator.iadd, operator.isub, operator.imul, operator.itruediv)


def describe(node: fx.Node) -> str:
    """Readable name of a node's operation."""
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _refuse_batch(ctx: OpContext, what: str) -> None:
    raise UnsupportedLayerError(
        f"node {ctx.name!r} ({describe(ctx.node)}) {what} the batch dimension (dim 0), so one "
        "sample's output would depend on the others; keep dim 0 as the batch."
    )


def _dims(value: Any, ndim: int) -> list[int]:
    values = value if isinstance(value, (tuple, list)) else [value]
    return [int(d) % ndim for d in values]


# ---- elementwise activations and module equivalents ------------------------------------


def _elementwise(ctx: OpContext, slope: float | torch.Tensor, guarantee: str) -> Step:
    """An elementwise map of largest slope ``slope``. Tensor arguments (``clamp`` bounds) may
    broadcast the input to a larger shape, repeating each entry ``r`` times: sqrt(r) more."""
    repeat = _expansion(ctx.input_value(), ctx.result)
    if repeat > 1.0:
        return ctx.unary(ctx.as_bound(slope) * repeat, "upper", "max slope x sqrt(broadcast)")
    return ctx.unary(slope, guarantee, "max slope")


def _slope(value: float, guarantee: str = "exact") -> Handler:
    def handler(ctx: OpContext) -> Step:
        return _elementwise(ctx, value, guarantee)

    return handler


def _leaky_relu(ctx: OpContext) -> Step:
    return _elementwise(ctx, max(1.0, abs(ctx.normalized().get("negative_slope", 0.01))),
                        "exact")


def _elu(ctx: OpContext) -> Step:
    return _elementwise(ctx, max(1.0, abs(ctx.normalized().get("alpha", 1.0))), "exact")


def _softplus(ctx: OpContext) -> Step:
    kwargs = ctx.normalized()
    bound = softplus_slope(kwargs.get("beta", 1.0), kwargs.get("threshold", 20.0),
                           ctx.input_value().dtype)
    return _elementwise(ctx, bound.value, bound.guarantee)


def _via_module(factory: Callable[[dict[str, Any]], nn.Module]) -> Handler:
    """Bound a functional call with the rule of the equivalent module."""

    def handler(ctx: OpContext) -> Step:
        kwargs = ctx.normalized()
        kwargs.pop("input")
        bound = apply_rule(factory(kwargs), ctx.input_value().shape, ctx.name,
                           ctx.input_value().dtype)
        return ctx.unary(bound.value, bound.guarantee, bound.method)

    return handler


def _pool(module_type: type[nn.Module], *names: str) -> Handler:
    def factory(kwargs: dict[str, Any]) -> nn.Module:
        if "stride" in kwargs and not kwargs["stride"]:
            kwargs["stride"] = None  # PyTorch's "default to the kernel size"
        return module_type(**{k: kwargs[k] for k in names if k in kwargs})

    return _via_module(factory)


def _dropout(ctx: OpContext) -> Step:
    if ctx.normalized().get("training", True):
        raise UnsupportedLayerError(
            f"node {ctx.name!r}: {describe(ctx.node)} is called with training=True (random); "
            "pass training=self.training and call model.eval()."
        )
    return ctx.unary(1.0, "exact", "identity (eval)", isometry=True)


def _linear(ctx: OpContext) -> Step:
    weight = ctx.normalized()["weight"]
    check_finite(weight, f"the weight of {ctx.name!r}")
    bound = dense_norm(weight, method="exact").require_sound(f"the norm of {ctx.name!r}")
    return ctx.unary(bound.value, bound.guarantee, bound.method, weight=weight)


def _pad(ctx: OpContext) -> Step:
    kwargs = ctx.normalized()
    if kwargs.get("mode", "constant") != "constant":
        raise UnsupportedLayerError(f"node {ctx.name!r}: only constant padding has a rule "
                                    f"(got mode={kwargs.get('mode')!r}).")
    if len(kwargs["pad"]) > 2 * (ctx.input_value().dim() - 1):
        _refuse_batch(ctx, "pads")
    return ctx.unary(1.0, "exact", "constant padding")


# ---- reshapes and selections -----------------------------------------------------------


def _reshape(ctx: OpContext) -> Step:
    source, result = ctx.input_value(), ctx.result
    if (torch.is_tensor(source) and torch.is_tensor(result) and result.is_floating_point()
            and source.is_floating_point()
            and torch.finfo(result.dtype).eps > max(torch.finfo(source.dtype).eps,
                                                    torch.finfo(torch.float32).eps)):
        # Rounding to half / bfloat16 is a step function: inputs a rounding boundary apart
        # map to outputs a relative 1e-3 apart, far beyond the float32 rounding guard.
        raise UnsupportedLayerError(
            f"node {ctx.name!r} ({describe(ctx.node)}) casts {source.dtype} to "
            f"{result.dtype}; rounding to a precision below float32 is not Lipschitz at "
            "the scale of certificates. Keep the computation in float32 or float64."
        )
    return ctx.unary(1.0, "exact", "reshape", isometry=True)


def _flatten(ctx: OpContext) -> Step:
    start = ctx.normalized().get("start_dim", 0)
    if int(start) % max(ctx.input_value().dim(), 1) == 0:
        _refuse_batch(ctx, "flattens")
    return _reshape(ctx)


def _permute(ctx: OpContext) -> Step:
    ndim = ctx.input_value().dim()
    dims = ctx.args[1:] if len(ctx.args) > 2 else ctx.args[1] if len(ctx.args) > 1 else \
        ctx.kwargs["dims"]
    if _dims(dims, ndim)[0] != 0:
        _refuse_batch(ctx, "moves")
    return _reshape(ctx)


def _transpose(ctx: OpContext) -> Step:
    kwargs = ctx.normalized()
    if 0 in _dims([kwargs["dim0"], kwargs["dim1"]], ctx.input_value().dim()):
        _refuse_batch(ctx, "moves")
    return _reshape(ctx)


def _movedim(ctx: OpContext) -> Step:
    """``movedim`` / ``moveaxis``: a permutation of the entries, unless it moves dim 0."""
    ndim = ctx.input_value().dim()
    source = ctx.args[1] if len(ctx.args) > 1 else ctx.kwargs["source"]
    destination = ctx.args[2] if len(ctx.args) > 2 else ctx.kwargs["destination"]
    if 0 in _dims(source, ndim) + _dims(destination, ndim):
        _refuse_batch(ctx, "moves")
    return _reshape(ctx)


def _swapaxes(ctx: OpContext) -> Step:
    ndim = ctx.input_value().dim()
    dims = list(ctx.args[1:3]) + [v for k, v in ctx.kwargs.items() if k != "input"]
    if len(dims) != 2 or 0 in _dims(dims, ndim):
        _refuse_batch(ctx, "moves")
    return _reshape(ctx)


def _unflatten(ctx: OpContext) -> Step:
    dim = ctx.args[1] if len(ctx.args) > 1 else ctx.kwargs["dim"]
    if int(dim) % ctx.input_value().dim() == 0:
        _refuse_batch(ctx, "splits")
    return _reshape(ctx)


def _dim_argument(ctx: OpContext, position: int, default: int | None = None) -> int:
    """The ``dim`` argument of a method / function call, by keyword or position."""
    if "dim" in ctx.kwargs:
        return int(ctx.kwargs["dim"])
    if len(ctx.args) > position:
        return int(ctx.args[position])
    if default is None:
        raise UnsupportedLayerError(f"node {ctx.name!r} ({describe(ctx.node)}): could not read "
                                    "its dim argument.")
    return default


def _selection_along(position: int, default: int | None = None) -> Handler:
    """``unbind`` / ``narrow`` / ``select`` / ``tensor_split``: pieces of the input along a
    non-batch dim, each 1-Lipschitz (views: in-place writes to them are tracked)."""

    def handler(ctx: OpContext) -> Step:
        if _dim_argument(ctx, position, default) % ctx.input_value().dim() == 0:
            _refuse_batch(ctx, "splits")
        return ctx.unary(1.0, "upper", "selection")

    return handler


def _sort(ctx: OpContext) -> Step:
    """``sort(dim)`` values: sorting each vector along a non-batch dim is 1-Lipschitz in l2
    (GroupSort, arXiv 1811.05381); the integer indices are refused where they are used."""
    if _dim_argument(ctx, 1, -1) % ctx.input_value().dim() == 0:
        _refuse_batch(ctx, "sorts along")
    return ctx.unary(1.0, "exact", "sorting")


def _attribute(ctx: OpContext) -> Step:
    """``result.values`` of sort (the selection of one piece of a named tuple)."""
    if ctx.args[1] != "values":
        raise UnsupportedLayerError(
            f"node {ctx.name!r} reads attribute {ctx.args[1]!r} of an input-dependent value; "
            "lipcert has no rule for it."
        )
    return ctx.unary(1.0, "upper", "selection")


def _replicate(ctx: OpContext) -> Step:
    """``expand`` / ``expand_as`` / ``broadcast_to`` / ``repeat``: each entry appears ``r``
    times, so the l2 norm of a change grows by exactly sqrt(r)."""
    repeat = _expansion(ctx.input_value(), ctx.result)
    return ctx.unary(repeat, "exact", "replication")


def _getitem(ctx: OpContext) -> Step:
    source, index = ctx.args[0], ctx.args[1]
    if torch.is_tensor(source):
        items = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items):
            raise UnsupportedLayerError(
                f"node {ctx.name!r}: indexing with tensors or lists (which may repeat entries) "
                "has no rule; use slices."
            )
        first = items[0] if items else slice(None)
        touches_batch = (first is not Ellipsis and first != slice(None)) or (
            first is Ellipsis and sum(i is not None for i in items[1:]) >= source.dim())
        if touches_batch:
            _refuse_batch(ctx, "indexes")
    return ctx.unary(1.0, "upper", "selection")


def _split(ctx: OpContext) -> Step:
    if int(ctx.normalized().get("dim", 0)) % ctx.input_value().dim() == 0:
        _refuse_batch(ctx, "splits")
    return ctx.unary(1.0, "upper", "selection")


def _reduce(scale: Callable[[int], float]) -> Handler:
    def handler(ctx: OpContext) -> Step:
        kwargs = ctx.normalized()
        value = ctx.input_value()
        if kwargs.get("dim") in (None, [], ()):
            _refuse_batch(ctx, "reduces")
        dims = _dims(kwargs["dim"], value.dim())
        if 0 in dims:
            _refuse_batch(ctx, "reduces")
        count = math.prod(value.shape[d] for d in set(dims))
        return ctx.unary(scale(count), "exact", f"reduction over {count} entries")

    return handler


# ---- arithmetic and combination --------------------------------------------------------


def _expansion(value: Any, result: torch.Tensor) -> float:
    """sqrt(times each entry is repeated when ``value`` is broadcast to ``result``)."""
    if not torch.is_tensor(value) or value.numel() == 0 or not torch.is_tensor(result):
        return 1.0
    return math.sqrt(max(result.numel() / value.numel(), 1.0))


def _operands(ctx: OpContext) -> tuple[Any, Any, Any, Any]:
    """(first node, second node, first value, second value) of a binary op."""
    nodes = list(ctx.node.args[:2])
    values = list(ctx.args[:2])
    for name in ("input", "other")[len(nodes):]:
        nodes.append(ctx.node.kwargs.get(name))
        values.append(ctx.kwargs.get(name))
    return nodes[0], nodes[1], values[0], values[1]


def _add(ctx: OpContext) -> Step:
    """``a + b``, ``a - b``, ``torch.add(a, b, alpha=...)``: the bounds of the operands add."""
    a, b, a_value, b_value = _operands(ctx)
    alpha = abs(float(ctx.kwargs.get("alpha", 1)))
    terms = [(node, coeff * _expansion(value, ctx.result))
             for node, value, coeff in ((a, a_value, 1.0), (b, b_value, alpha))
             if ctx.bound_of(node) is not None]
    total = sum(ctx.running[node] * scale for node, scale in terms)
    if len(terms) == 2:
        return Step(total, total, "upper", "sum of both operands' bounds", combine=True)
    (node, scale), = terms
    dep_value = a_value if node is a else b_value
    isometry = scale == 1.0 and ctx.result.shape == dep_value.shape
    return Step(total, ctx.as_bound(scale), "exact" if isometry else "upper",
                "shift by a constant", isometry=isometry)


def _magnitude(value: Any, smallest: bool) -> float | torch.Tensor:
    if isinstance(value, (int, float, bool)):
        return abs(float(value))
    if torch.is_tensor(value):
        check_finite(value, "a constant factor")
        return value.abs().min() if smallest else value.abs().max()
    raise UnsupportedLayerError(f"unsupported constant factor of type {type(value).__name__}.")


def _mul(ctx: OpContext) -> Step:
    """Scaling by a constant: largest magnitude of the factor (times broadcast repetition)."""
    a, b, a_value, b_value = _operands(ctx)
    if ctx.bound_of(a) is not None and ctx.bound_of(b) is not None:
        raise UnsupportedLayerError(
            f"node {ctx.name!r} multiplies two input-dependent tensors, which is not globally "
            "Lipschitz; lipcert cannot bound it."
        )
    dep, dep_value, factor = (a, a_value, b_value) if ctx.bound_of(a) is not None else \
        (b, b_value, a_value)
    expansion = _expansion(dep_value, ctx.result)
    local = ctx.as_bound(_magnitude(factor, smallest=False)) * expansion
    exact = not torch.is_tensor(factor) and expansion == 1.0
    return Step(local * ctx.running[dep], local, "exact" if exact else "upper",
                "scaling by a constant")


def _div(ctx: OpContext) -> Step:
    a, b, a_value, b_value = _operands(ctx)
    if ctx.bound_of(b) is not None or ctx.kwargs.get("rounding_mode") is not None:
        raise UnsupportedLayerError(
            f"node {ctx.name!r}: only division of an input-dependent tensor by a constant (no "
            "rounding) has a Lipschitz rule."
        )
    smallest = _magnitude(b_value, smallest=True)
    if float(smallest) == 0.0:
        raise BadInputError(f"node {ctx.name!r} divides by a constant that contains zero.")
    local = ctx.as_bound(_expansion(a_value, ctx.result)) / ctx.as_bound(smallest)
    exact = not torch.is_tensor(b_value) and a_value.shape == ctx.result.shape
    return Step(local * ctx.running[a], local, "exact" if exact else "upper",
                "division by a constant")


def _concatenate(new_axis: bool) -> Handler:
    def handler(ctx: OpContext) -> Step:
        kwargs = ctx.normalized()
        dim = int(kwargs.get("dim", 0)) % ctx.result.dim()
        if dim == 0:
            _refuse_batch(ctx, "stacks along" if new_axis else "concatenates along")
        tensors = ctx.node.args[0] if ctx.node.args else ctx.node.kwargs["tensors"]
        values = ctx.args[0] if ctx.args else ctx.kwargs["tensors"]
        if not all(torch.is_tensor(v) and v.is_floating_point() for v in values):
            raise UnsupportedLayerError(
                f"node {ctx.name!r} ({describe(ctx.node)}) joins tensors that are not all "
                "floating point (e.g. sort indices); that is not a Lipschitz function.")
        if isinstance(tensors, fx.Node):  # a tuple node (``torch.cat(x.chunk(2, 1), 1)``)
            # its bound holds for each piece: the root of the sum of squares over the pieces
            bounds = [ctx.running[tensors]] * len(values)
        else:
            bounds = [b for b in (ctx.bound_of(t) for t in tensors) if b is not None]
        total = torch.sqrt(sum(b * b for b in bounds))
        return Step(total, total, "upper", "root of the sum of squared bounds",
                    combine=len(bounds) > 1)

    return handler


# Operations whose result depends only on the input's shape, not its values: constants.
SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "new_zeros", "new_ones", "new_full"}
SHAPE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like}
SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda"}


def is_shape_query(node: fx.Node) -> bool:
    """True for ``x.size()``, ``x.shape``, ``torch.zeros_like(x)`` and the like."""
    if node.op == "call_method":
        return node.target in SHAPE_METHODS
    if node.op != "call_function":
        return False
    if node.target is builtins.getattr:
        return len(node.args) > 1 and node.args[1] in SHAPE_ATTRIBUTES
    return node.target in SHAPE_FUNCTIONS


def _all(keys: tuple[Any, ...], handler: Handler) -> dict[Any, Handler]:
    return dict.fromkeys(keys, handler)


HANDLERS: dict[Any, Handler] = {
    **_all((F.relu, torch.relu, "relu", F.relu6, F.hardtanh, torch.abs, "abs", torch.clamp,
            "clamp", torch.tanh, "tanh", F.tanh), _slope(1.0)),
    F.softplus: _softplus,
    **_all((torch.sigmoid, "sigmoid", F.sigmoid), _slope(0.25)),
    F.gelu: _slope(GELU_SLOPE, "upper"),
    F.silu: _slope(SILU_SLOPE, "upper"),
    F.leaky_relu: _leaky_relu,
    F.elu: _elu,
    F.max_pool1d: _pool(nn.MaxPool1d, "kernel_size", "stride", "padding", "dilation",
                        "ceil_mode", "return_indices"),
    F.max_pool2d: _pool(nn.MaxPool2d, "kernel_size", "stride", "padding", "dilation",
                        "ceil_mode", "return_indices"),
    F.avg_pool1d: _pool(nn.AvgPool1d, "kernel_size", "stride", "padding", "ceil_mode",
                        "count_include_pad"),
    F.avg_pool2d: _pool(nn.AvgPool2d, "kernel_size", "stride", "padding", "ceil_mode",
                        "count_include_pad", "divisor_override"),
    F.adaptive_avg_pool1d: _pool(nn.AdaptiveAvgPool1d, "output_size"),
    F.adaptive_avg_pool2d: _pool(nn.AdaptiveAvgPool2d, "output_size"),
    **_all((F.dropout, F.dropout1d, F.dropout2d, F.dropout3d), _dropout),
    F.linear: _linear,
    F.pad: _pad,
    **_all(("view", "reshape", torch.reshape, "contiguous", "clone", torch.clone, "squeeze",
            torch.squeeze, "unsqueeze", torch.unsqueeze, "to", "float", "double", "half",
            "bfloat16",
            operator.neg, torch.neg, "neg"), _reshape),
    **_all((torch.flatten, "flatten"), _flatten),
    **_all((torch.permute, "permute"), _permute),
    **_all((torch.transpose, "transpose"), _transpose),
    operator.getitem: _getitem,
    **_all((torch.chunk, "chunk", torch.split, "split"), _split),
    **_all((torch.movedim, "movedim", torch.moveaxis, "moveaxis"), _movedim),
    **_all((torch.swapaxes, "swapaxes", torch.swapdims, "swapdims"), _swapaxes),
    **_all((torch.unflatten, "unflatten"), _unflatten),
    **_all((torch.unbind, "unbind"), _selection_along(1, 0)),
    **_all((torch.narrow, "narrow", torch.select, "select"), _selection_along(1)),
    **_all((torch.tensor_split, "tensor_split"), _selection_along(2, 0)),
    **_all((torch.sort, "sort"), _sort),
    builtins.getattr: _attribute,
    **_all(("expand", "expand_as", torch.broadcast_to, "broadcast_to", "repeat"), _replicate),
    **_all((torch.mean, "mean"), _reduce(lambda n: 1.0 / math.sqrt(n))),
    **_all((torch.sum, "sum"), _reduce(math.sqrt)),
    **_all((operator.add, torch.add, "add", operator.sub, torch.sub, "sub", operator.iadd,
            operator.isub), _add),
    **_all((operator.mul, torch.mul, "mul", operator.imul), _mul),
    **_all((operator.truediv, torch.div, "div", operator.itruediv), _div),
    **_all((torch.cat, torch.concat, torch.concatenate), _concatenate(new_axis=False)),
    torch.stack: _concatenate(new_axis=True),
}
