"""Named model recipes from the papers, and checkpoints that never unpickle.

``build(name, **overrides)`` returns a freshly initialized ``nn.Module``; :data:`RECIPES`
lists the names and :func:`describe` says what each builds:

- ``"sll-s"``, ``"cpl-s"``, ``"aol-s"``, ``"spectral-s"``: CPU-sized 1-Lipschitz networks
  (SLL, arXiv 2303.03169; CPL, arXiv 2110.12690; AOL, arXiv 2208.03160; spectral
  normalization with a guaranteed Gram-iteration bound) in the layout of the SLL paper's
  models. Every module before the last layer is 1-Lipschitz; the last layer is a
  :class:`lipcert.layers.NormalizedLinear` (unit-norm rows), certified with its rows pairwise.
- ``"lmt-mnist"``: the plain CNN of Kolter & Wong that LMT (arXiv 1802.04034) trains.
- ``"dcnn-s"``: a deep diagonal-circulant network (arXiv 1901.10255; ``width``, ``depth``),
  unconstrained; ``"dcnn-lip-s"``: its 1-Lipschitz variant (normalized DC input layer,
  orthogonal circulant layers, MaxMin, normalized last layer). See
  :mod:`lipcert.models.structured`.

Every recipe takes ``in_channels``, ``image_size``, ``num_classes`` (defaults 1, 28, 10 for
MNIST), ``width`` and ``depth``; the convolutional ones also ``dense_width`` and ``dense_depth``;
and ``normalize="channels"`` puts a per-channel input normalization inside the model
(:func:`fit_input_normalization` sets it from the training images).

``save(model, path)`` writes ``path`` (safetensors weights) and a JSON spec beside it;
``load(path)`` rebuilds the recipe and fills it; ``read_spec(path)`` returns the spec (recipe,
arguments, data set, normalization...). See :mod:`lipcert.models.checkpoint` for the layout.
"""

from lipcert.models.checkpoint import load, read_spec, save, spec_path
from lipcert.models.registry import (
    NORMALIZE_CHOICES,
    RECIPES,
    Recipe,
    build,
    default_args,
    describe,
    fit_input_normalization,
    get_recipe,
)

__all__ = [
    "NORMALIZE_CHOICES",
    "RECIPES",
    "Recipe",
    "build",
    "default_args",
    "describe",
    "fit_input_normalization",
    "get_recipe",
    "load",
    "read_spec",
    "save",
    "spec_path",
]
