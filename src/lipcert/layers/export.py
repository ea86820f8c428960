"""Export to plain torch modules: :func:`to_vanilla` and the builders the layers use.

Every lipcert layer implements ``vanilla(input_shape)``, which returns an equivalent module
built only from torch classes (``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d``,
``nn.ReLU``, ``nn.LPPool2d``, ``nn.PixelUnshuffle``, or a ``torch.fx.GraphModule`` over such
modules for residual and weight-free operations). The normalization is recomputed from the
current weights at export time; no cached value is trusted.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from lipcert.errors import BadInputError

__all__ = ["to_vanilla", "plain_linear_like", "plain_conv_like", "residual_graph", "traced"]


def plain_linear_like(layer: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` with ``layer``'s shape and bias and the given effective ``weight``."""
    plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                      device=weight.device, dtype=weight.dtype)
    _copy_into(plain, weight, layer.bias)
    return plain


def plain_conv_like(layer: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    """An ``nn.Conv2d`` with ``layer``'s hyper-parameters and bias and the given ``weight``."""
    plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                      stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      groups=layer.groups, bias=layer.bias is not None,
                      padding_mode=layer.padding_mode, device=weight.device, dtype=weight.dtype)
    _copy_into(plain, weight, layer.bias)
    return plain


def _copy_into(plain: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        plain.weight.copy_(weight.detach())
        if bias is not None:
            plain.bias.copy_(bias.detach())


class _Residual(nn.Module):
    """``x + branch(x)``; only ever traced into a GraphModule, never exported itself."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_graph(*branch: nn.Module) -> fx.GraphModule:
    """A GraphModule computing ``x + branch[-1](... branch[0](x))`` from plain modules."""
    return fx.symbolic_trace(_Residual(nn.Sequential(*branch)))


def traced(module: nn.Module) -> fx.GraphModule:
    """A GraphModule with ``module``'s forward written in torch operations only (its class and
    any lipcert code are gone; parameters and buffers it reads are copied)."""
    return fx.symbolic_trace(copy.deepcopy(module))


def _record_input_shapes(model: nn.Module, input_shape) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if hasattr(module, "vanilla"):
            def hook(_module, args, name=name):
                shapes[name] = tuple(args[0].shape)
            handles.append(module.register_forward_pre_hook(hook))
    reference = next(iter(model.parameters()), None)
    example = torch.zeros(tuple(input_shape),
                          dtype=reference.dtype if reference is not None else None,
                          device=reference.device if reference is not None else None)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def to_vanilla(model: nn.Module, input_shape=None) -> nn.Module:
    """A copy of ``model`` in which every lipcert layer is replaced by plain torch modules.

    The copy computes the same function as ``model.eval()`` (to float rounding; the tests
    check 1e-5), for deployment without lipcert. Layers whose effective weight depends on the
    input size (``CPLConv2d``, ``CayleyConv2d``) are exported for the size they see: pass
    ``input_shape`` (the model's input batch shape; one forward pass on zeros records each
    layer's input) or run the model once on real inputs before exporting. The exported copy
    of such a layer is valid for that size only. Other modules are deep-copied unchanged.
    The original model is not modified.

    Raises:
        BadInputError: a size-dependent layer has never seen an input and no ``input_shape``
            was given.
    """
    shapes = _record_input_shapes(model, input_shape) if input_shape is not None else {}
    if hasattr(model, "vanilla"):
        return model.vanilla(shapes.get(""))
    plain = copy.deepcopy(model)
    _replace_children(plain, "", shapes)
    return plain.eval()


def _replace_children(module: nn.Module, prefix: str, shapes: dict) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if hasattr(child, "vanilla"):
            try:
                exported = child.vanilla(shapes.get(path))
            except BadInputError as err:
                raise BadInputError(f"to_vanilla: module {path!r}: {err}") from err
            setattr(module, name, exported.eval())
        else:
            _replace_children(child, f"{path}.", shapes)
