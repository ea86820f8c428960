"""Operator norms of ONE linear map: dense matrices and convolutions.

Every function returns a :class:`NormBound` that says whether its value is exact, an upper
bound, or only an estimate.
"""

from lipcert.linalg.result import GUARANTEES, SOUND_GUARANTEES, NormBound

__all__ = ["NormBound", "GUARANTEES", "SOUND_GUARANTEES"]
