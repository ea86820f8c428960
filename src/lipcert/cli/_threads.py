"""``--threads N`` on every command, and the ``LIPCERT_THREADS`` environment variable.

torch uses one intra-op thread per core by default. On a machine that other jobs share, that
default can be far slower than one thread (measured on a loaded 2-core machine: ``lipcert
attack`` 50.8 s with the default against 4.6 s with one thread). Results depend on the thread
count (float sums are reduced in another order: clean accuracy 0.954 against 0.961 was seen),
while the same seed and the same thread count reproduce bit for bit.
"""

from __future__ import annotations

import argparse
import os

import torch

from lipcert.errors import BadInputError

THREADS_VARIABLE = "LIPCERT_THREADS"


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help=f"torch intra-op threads (default: ${THREADS_VARIABLE} if set, else torch's "
        "default of one per core; on a busy machine 1 is often much faster; results can "
        "change with N, the same seed and N reproduce exactly)")


def resolve_threads(flag: int | None) -> int | None:
    """The thread count asked for: the flag, else ``$LIPCERT_THREADS``, else None (torch's
    default). Raises :class:`BadInputError` for a count below 1 or a non-integer variable."""
    if flag is not None:
        if flag < 1:
            raise BadInputError(f"--threads must be >= 1, got {flag}.")
        return flag
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadInputError(f"${THREADS_VARIABLE} must be an integer >= 1, got {text!r}.")
    return value


def apply_threads(flag: int | None) -> int:
    """Set torch's intra-op thread count from ``--threads`` / ``$LIPCERT_THREADS``; returns
    the count in use."""
    threads = resolve_threads(flag)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
