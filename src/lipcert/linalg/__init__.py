"""Operator norms of ONE linear map: dense matrices and convolutions.

Every function returns a :class:`NormBound` that says whether its value is exact, an upper
bound, or only an estimate.

- :func:`dense_norm` (methods :data:`DENSE_METHODS`): exact SVD, power iteration, Gram
  iteration (arXiv 2305.16173).
- :func:`conv_norm` (methods :data:`CONV_METHODS`): 1-D/2-D convolutions with zero or
  circular padding and any stride; frequency SVD, Gram iteration (plain, frequency-pruned,
  on the kernel), Toeplitz, reshape and power-iteration methods.
- :func:`operator_norm`: the same for ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` modules.
- :class:`PowerIterationState`: persistent power-iteration vector for training loops.
- :func:`circulant_norm` (exact, ``max |FFT(c)|``) and :func:`toeplitz_norm` (methods
  :data:`TOEPLITZ_METHODS`: circulant embedding, trigonometric bound, exact, Gram, power)
  for structured layers (arXiv 1901.10255, 2109.00959).
"""

from lipcert.linalg.conv import CONV_METHODS, conv_norm, describe_conv
from lipcert.linalg.dense import DENSE_METHODS, dense_norm
from lipcert.linalg.gram import gram_iterate, gram_schatten_bound
from lipcert.linalg.operator import operator_norm
from lipcert.linalg.power import PowerIterationState
from lipcert.linalg.result import GUARANTEES, SOUND_GUARANTEES, NormBound
from lipcert.linalg.structured import TOEPLITZ_METHODS, circulant_norm, toeplitz_norm

__all__ = [
    "NormBound",
    "GUARANTEES",
    "SOUND_GUARANTEES",
    "DENSE_METHODS",
    "CONV_METHODS",
    "dense_norm",
    "conv_norm",
    "describe_conv",
    "operator_norm",
    "PowerIterationState",
    "gram_iterate",
    "gram_schatten_bound",
    "TOEPLITZ_METHODS",
    "circulant_norm",
    "toeplitz_norm",
]
