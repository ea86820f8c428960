"""Argument checks shared by the operator-norm functions."""

from __future__ import annotations

from lipcert.errors import BadInputError

__all__ = ["check_options", "check_iterations", "unknown_method"]


def check_options(method: str, options: dict, allowed: tuple[str, ...]) -> None:
    """Raise :class:`BadInputError` for an option the method does not take."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BadInputError(
            f"method {method!r} does not take option(s) {unknown}; it accepts {list(allowed)}."
        )


def check_iterations(n_iter: int, least: int = 0) -> int:
    """Return ``n_iter`` as an int, or raise :class:`BadInputError`."""
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < least:
        raise BadInputError(f"n_iter must be an integer >= {least}, got {n_iter!r}.")
    return n_iter


def unknown_method(method: object, methods: tuple[str, ...], what: str) -> BadInputError:
    """The error for a method name that is not one of ``methods``."""
    return BadInputError(f"unknown {what} method {method!r}; choose one of {list(methods)}.")
