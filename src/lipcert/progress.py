"""Progress reporting shared by training, certification and attacks.

On a terminal (or in a notebook) :func:`progress_bar` is a live tqdm bar. When standard error
is not a terminal (a log file, a pipe, a batch job) a bar would write hundreds of ``\\r``
updates into the log, so it writes ONE line when it closes instead: what was done, how much,
how long, and the last figures shown (e.g. one line per training epoch).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "is_interactive"]


def is_interactive() -> bool:
    """True when standard error is a terminal, or inside a Jupyter kernel (tqdm's widget)."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


class _SummaryLine:
    """The part of tqdm's interface lipcert uses, printing a single line at :meth:`close`."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str,
                 unit: str) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __enter__(self) -> _SummaryLine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.started
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        figures = "".join(f", {key}={value}" for key, value in self.postfix.items())
        print(f"{self.desc}: {count} {self.unit} in {seconds:.1f} s{figures}", file=sys.stderr,
              flush=True)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
                 unit: str, enabled: bool = True, **tqdm_options: Any):
    """A progress bar over ``iterable`` (or updated by hand up to ``total``).

    A tqdm bar when :func:`is_interactive`; otherwise an object with the same ``update``,
    ``set_postfix``, ``close`` and iteration that prints one summary line when it closes.
    With ``enabled=False`` nothing is shown at all.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if enabled and not is_interactive():
        return _SummaryLine(iterable, total, desc, unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, **tqdm_options)
