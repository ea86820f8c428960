"""Attacks that try to break certificates: batched, device-agnostic, seeded.

- :func:`pgd`: projected gradient descent under l2 or l-infinity (Madry et al., arXiv 1706.06083).
- :func:`fgsm`: one signed (l-infinity) or normalized (l2) gradient step (Goodfellow et al.,
  arXiv 1412.6572).
- :func:`autoattack`: AutoAttack's standard ensemble (Croce & Hein, arXiv 2003.01690) through
  torchattacks, an optional dependency (``pip install lipcert[autoattack]``).
- :func:`deepfool`: DeepFool l2 (Moosavi-Dezfooli et al., arXiv 1511.04599).
- :func:`carlini_wagner_l2`: Carlini-Wagner l2 (arXiv 1608.04644).
- :func:`minimal_l2_distance`: the smallest verified l2 perturbation found by those attacks,
  an empirical upper bound on each point's true robust radius.
- :func:`robust_accuracy`: accuracy under attack for several radii and norms.
- :func:`audit`: attacks every certified point inside its certified ball; an
  :class:`AuditReport` counts the broken certificates and measures their tightness.

Randomized models (with :class:`lipcert.layers.NoiseInjection`): every attack takes ``eot=k``
(expectation over k fresh noise draws at every step) and evaluation draws fresh noise at every
forward (``votes=m``: majority over m draws); ``eot=1`` on such a model issues a
:class:`RandomizedModelWarning`, since the result would overstate robustness.

Attacks never change the model's mode (put it in eval mode first) and leave its parameters'
gradients alone. Inputs are kept in the data range ``clip`` (default [0, 1]).
"""

from lipcert.attacks.audit import (
    AuditReport,
    CertificateViolationError,
    CertificateViolationWarning,
    audit,
)
from lipcert.attacks.autoattack import autoattack
from lipcert.attacks.carlini_wagner import carlini_wagner_l2
from lipcert.attacks.common import RandomizedModelWarning, predict
from lipcert.attacks.deepfool import deepfool
from lipcert.attacks.evaluate import robust_accuracy
from lipcert.attacks.fgsm import fgsm
from lipcert.attacks.minimal import minimal_l2_distance
from lipcert.attacks.pgd import eot_gradient, pgd

__all__ = [
    "pgd",
    "fgsm",
    "autoattack",
    "deepfool",
    "carlini_wagner_l2",
    "minimal_l2_distance",
    "robust_accuracy",
    "audit",
    "AuditReport",
    "CertificateViolationError",
    "CertificateViolationWarning",
    "RandomizedModelWarning",
    "eot_gradient",
    "predict",
]
