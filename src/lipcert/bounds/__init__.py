"""Lipschitz bounds of whole networks: ``lipschitz_bound`` (upper) and
``lipschitz_lower_bound`` (attained), so users see the bracket [lower, upper].

Rules follow Lipschitz-Margin Training (Tsuzuku, Sato, Sugiyama 2018, arXiv 1802.04034).
Add a rule for your own module type with :func:`register_rule`.
"""

import lipcert.bounds.builtin  # noqa: F401  (registers the rules of the torch.nn modules)
from lipcert.bounds.graph import lipschitz_bound
from lipcert.bounds.lower import LowerBound, lipschitz_lower_bound
from lipcert.bounds.normalize import Normalize
from lipcert.bounds.report import LastLinear, LayerBound, LipschitzReport
from lipcert.bounds.rules import find_rule, register_rule

__all__ = [
    "lipschitz_bound",
    "lipschitz_lower_bound",
    "LowerBound",
    "LipschitzReport",
    "LayerBound",
    "LastLinear",
    "register_rule",
    "find_rule",
    "Normalize",
]
