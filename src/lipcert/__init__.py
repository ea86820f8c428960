"""lipcert: Lipschitz-certified robustness for PyTorch.

Operator norms of layers (:mod:`lipcert.linalg`), 1-Lipschitz layers (:mod:`lipcert.layers`),
network Lipschitz bounds (:mod:`lipcert.bounds`), certificates (:mod:`lipcert.certify`),
attacks that try to break them (:mod:`lipcert.attacks`) and certified training
(:mod:`lipcert.train`). Every number carries its guarantee: ``exact``, ``upper`` or ``estimate``.
"""

__version__ = "0.1.0"

from lipcert.errors import (  # noqa: E402
    BadInputError,
    CheckpointError,
    DataError,
    LipcertError,
    UnsoundRequestError,
    UnsupportedLayerError,
)

__all__ = [
    "__version__",
    "LipcertError",
    "BadInputError",
    "DataError",
    "CheckpointError",
    "UnsupportedLayerError",
    "UnsoundRequestError",
]
