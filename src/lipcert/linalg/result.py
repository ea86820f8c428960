"""The result type of every operator-norm computation: a value and its guarantee."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lipcert.errors import BadInputError, UnsoundRequestError

Guarantee = Literal["exact", "upper", "estimate"]
GUARANTEES: tuple[str, ...] = ("exact", "upper", "estimate")
SOUND_GUARANTEES: tuple[str, ...] = ("exact", "upper")


@dataclass(frozen=True)
class NormBound:
    """An operator norm (or a Lipschitz constant) together with what it guarantees.

    Attributes:
        value: 0-dim tensor; differentiable w.r.t. the weights where the method is.
        guarantee: ``"exact"`` (equal to the truth up to float rounding), ``"upper"`` (never
            below the truth) or ``"estimate"`` (may lie below the truth, e.g. an unconverged
            power iteration). Certificates accept only ``exact`` and ``upper``.
        method: name of the method that produced it.
        iterations: iterations the method ran (0 for closed forms).
    """

    value: torch.Tensor
    guarantee: Guarantee
    method: str
    iterations: int = 0

    def __post_init__(self) -> None:
        if self.guarantee not in GUARANTEES:
            raise BadInputError(
                f"NormBound guarantee must be one of {GUARANTEES}, got {self.guarantee!r}")
        if not torch.is_tensor(self.value) or self.value.dim() != 0:
            shape = tuple(self.value.shape) if torch.is_tensor(self.value) else type(self.value)
            raise BadInputError(f"NormBound.value must be a 0-dim tensor (one number), got "
                                f"{shape}; a Lipschitz rule returns one bound.")

    @property
    def is_sound(self) -> bool:
        """True when the value may be used in a certificate (``exact`` or ``upper``)."""
        return self.guarantee in SOUND_GUARANTEES

    def require_sound(self, what: str = "this bound") -> NormBound:
        """Return self, or raise :class:`UnsoundRequestError` if it is only an estimate."""
        if not self.is_sound:
            raise UnsoundRequestError(
                f"{what} was computed with method {self.method!r}, which gives an estimate that "
                "may lie below the true norm; use an 'exact' or 'upper' method to certify."
            )
        return self

    def __float__(self) -> float:
        return float(self.value.detach())

    def __repr__(self) -> str:
        return (f"NormBound({float(self):.6g}, guarantee={self.guarantee!r}, "
                f"method={self.method!r}, iterations={self.iterations})")
