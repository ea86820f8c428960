"""Certificates: which predictions provably cannot change within a radius.

- :func:`lipschitz_radii` / :func:`margin_radii`: Lipschitz-margin radii (LMT, arXiv
  1802.04034), global and pairwise last-layer forms.
- :class:`Smoothed`: randomized smoothing (Cohen et al., arXiv 1902.02918), batched over inputs,
  Gaussian (l2), Laplace (l1) and uniform (l1, l-inf) noise, and the several-distribution
  certificate of arXiv 2206.01715 (:meth:`Smoothed.certify_multi`, :func:`multi_sigma_radius`).
- :func:`clopper_pearson_lower` / :func:`clopper_pearson_upper`: exact binomial bounds.
- :func:`certified_accuracy`: fraction certified at each radius (radii or smoothing results).
- :func:`noise_injection_radii`: Renyi / TV / pure-divergence radii of a network with one
  :class:`lipcert.layers.NoiseInjection` (Pinot et al. 2019, arXiv 1902.01148).
"""

from lipcert.certify.accuracy import certified_accuracy
from lipcert.certify.lipschitz import lipschitz_radii, margin_radii
from lipcert.certify.multi_sigma import multi_sigma_radius
from lipcert.certify.noise_injection import NoiseInjectionRadii, noise_injection_radii
from lipcert.certify.smoothing import Smoothed, SmoothingResult, cohen_radius, smoothing_radius
from lipcert.certify.statistics import clopper_pearson_lower, clopper_pearson_upper

__all__ = [
    "lipschitz_radii",
    "margin_radii",
    "certified_accuracy",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "Smoothed",
    "SmoothingResult",
    "cohen_radius",
    "smoothing_radius",
    "multi_sigma_radius",
    "noise_injection_radii",
    "NoiseInjectionRadii",
]
