"""Certificates: which predictions provably cannot change within an l2 radius.

- :func:`lipschitz_radii` / :func:`margin_radii`: Lipschitz-margin radii (LMT, arXiv
  1802.04034), global and pairwise last-layer forms.
- :func:`certified_accuracy`: fraction certified at each radius.
"""

from lipcert.certify.accuracy import certified_accuracy
from lipcert.certify.lipschitz import lipschitz_radii, margin_radii
from lipcert.certify.statistics import clopper_pearson_lower, clopper_pearson_upper

__all__ = [
    "lipschitz_radii",
    "margin_radii",
    "certified_accuracy",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
]
