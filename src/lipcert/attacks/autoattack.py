"""AutoAttack, the field's standard robustness evaluation, through torchattacks.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (arXiv 2003.01690). lipcert does not reimplement it: the ensemble is
assembled from torchattacks' implementations of its four attacks (an optional dependency,
``pip install lipcert[autoattack]``), with the settings of the authors' ``standard`` version,
which torchattacks' own ``AutoAttack`` class does not use (it runs 10 iterations where the
paper runs 100):

- ``"standard"``: APGD-CE (100 iterations), APGD-T with the DLR-targeted loss (100 iterations,
  9 target classes), FAB-T (100 iterations, 9 target classes), Square (5,000 queries); each
  attack runs only on the points the previous ones did not break.
- ``"rand"``: for randomized models, APGD-CE and APGD-DLR with expectation over 20
  transformations per step (the authors' protocol for randomized defenses).

lipcert wraps the call so that it follows the conventions of its other attacks: the model's
mode and its parameters' ``requires_grad`` and ``.grad`` are left as they were, torch's global
random state is restored afterwards (the torchattacks attacks reseed it), and every returned
point is projected back onto the ``eps`` ball and the data range [0, 1] in the input's dtype,
so that a robust accuracy computed from it is an honest empirical upper bound.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from lipcert.attacks.common import (
    DATA_RANGE,
    Bounds,
    Model,
    RandomizedModelWarning,
    check_batch,
    check_norm,
    clamp_to,
    input_gradients_only,
    is_randomized,
    per_sample,
)
from lipcert.attacks.pgd import project
from lipcert.errors import BadInputError, MissingDependencyError, check_labels

VERSIONS = ("standard", "rand")
ITERATIONS = 100
SQUARE_QUERIES = 5000
RANDOMIZED_EOT = 20
INSTALL_HINT = (
    "AutoAttack needs torchattacks: pip install 'lipcert[autoattack]' (or, to keep your torch "
    "build untouched, pip install --no-deps torchattacks scipy: torchattacks lists torchvision "
    "as a requirement but never imports it)."
)


class _Logits(nn.Module):
    """The model as torchattacks wants it: an ``nn.Module`` in eval mode with a parameter that
    names the device. The user's model is held outside the module tree, so torchattacks'
    ``eval()``/``train()`` calls never reach it. torchattacks works in float32 (FAB creates
    float32 tensors whatever the input is), so inputs are cast to ``dtype``, the clean
    batch's, on their way into the model, and its logits to float32 on their way out."""

    def __init__(self, model: Model, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self._model = [model]
        self._dtype = dtype
        self.device_marker = nn.Parameter(torch.empty(0, device=device), requires_grad=False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self._model[0](x.to(self._dtype)).float()


def autoattack(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: float = float("inf"),
    *,
    version: str = "standard",
    seed: int = 0,
    clip: Bounds = DATA_RANGE,
) -> Tensor:
    """AutoAttack adversarial examples for ``x`` inside the ``norm`` ball of radius ``eps``.

    Args:
        model: maps a batch to logits (N, classes), at least 4 classes (the DLR losses need
            them); put it in eval mode first (its mode is never changed).
        x: clean inputs (N, C, H, W) in [0, 1]; y: labels (N,).
        eps: ball radius (one number; AutoAttack takes no per-sample radii).
        norm: ``float("inf")`` or 2.
        version: ``"standard"`` (deterministic models) or ``"rand"`` (randomized models:
            EOT over 20 draws); see the module docstring.
        seed: seed of the attacks' random starts and of Square's sampling.
        clip: must be the data range (0, 1), the only one torchattacks supports.

    Returns:
        Per sample the adversarial point the ensemble found, else the clean input; inside the
        ``eps`` ball and [0, 1]. A point the attack does not break proves nothing.
    """
    try:
        import torchattacks
    except ImportError as error:
        raise MissingDependencyError(INSTALL_HINT) from error
    check_batch(x, y, clip)
    p = check_norm(norm)
    if clip is None or tuple(map(float, clip)) != DATA_RANGE:
        raise BadInputError(f"AutoAttack works on inputs in [0, 1] only (clip=(0, 1)), got "
                            f"clip={clip}; put the normalization inside the model.")
    if version not in VERSIONS:
        raise BadInputError(f"version must be one of {VERSIONS}, got {version!r}.")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise BadInputError(f"AutoAttack takes one finite radius eps >= 0, got {eps!r}.")
    if x.dim() != 4:
        raise BadInputError(f"AutoAttack attacks image batches (N, C, H, W), got shape "
                            f"{tuple(x.shape)}.")
    if version == "standard" and is_randomized(model):
        warnings.warn("AutoAttack 'standard' on a randomized model (NoiseInjection) overstates "
                      "its robustness; use version='rand' (EOT over 20 draws).",
                      RandomizedModelWarning, stacklevel=2)
    x = x.detach()
    if x.shape[0] == 0 or eps == 0:
        return x.clone()
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    check_labels(y, len(x), classes)
    if classes < 4:
        raise BadInputError(f"AutoAttack's DLR losses need at least 4 classes; the model "
                            f"returns {classes}. Use pgd for this model.")
    wrapped = _Logits(model, x.device, x.dtype)
    attacks = _ensemble(torchattacks, wrapped, float(eps), "Linf" if p == math.inf else "L2",
                        version, seed, classes)
    ensemble = torchattacks.MultiAttack(attacks)
    ensemble.set_device(x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), input_gradients_only(model):
        found = ensemble(x.float(), y).detach().to(dtype=x.dtype, device=x.device)
    radius = per_sample(float(eps), x, "eps")
    return clamp_to(x + project(found - x, radius, p), clip)


def _ensemble(torchattacks, model: nn.Module, eps: float, norm: str, version: str, seed: int,
              classes: int) -> list:
    """The attacks of AutoAttack's ``version`` with the authors' settings."""
    targets = min(9, classes - 1)
    if version == "rand":
        return [torchattacks.APGD(model, norm=norm, eps=eps, steps=ITERATIONS, seed=seed,
                                  loss=loss, eot_iter=RANDOMIZED_EOT) for loss in ("ce", "dlr")]
    return [
        torchattacks.APGD(model, norm=norm, eps=eps, steps=ITERATIONS, seed=seed, loss="ce"),
        torchattacks.APGDT(model, norm=norm, eps=eps, steps=ITERATIONS, seed=seed,
                           n_classes=targets + 1),
        torchattacks.FAB(model, norm=norm, eps=eps, steps=ITERATIONS, seed=seed,
                         multi_targeted=True, n_classes=targets + 1),
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=SQUARE_QUERIES, seed=seed),
    ]
