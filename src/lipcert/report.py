"""Plain-text tables, JSON output and matplotlib figures shared by the CLI and benchmarks."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lipcert.errors import BadInputError, LipcertError

FIGURE_FORMATS = ("png", "pdf", "svg")


class OutputError(LipcertError, OSError):
    """An output file or folder could not be written (also an :class:`OSError`)."""


def _output_error(path: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    where = Path(err.filename) if err.filename else path
    blocking = [p for p in reversed(path.parents) if p.exists() and not p.is_dir()]
    if blocking:
        reason = f"{blocking[0]} is a file, not a folder"
    elif where in path.parents:
        reason = f"{reason} ({where})"
    return OutputError(f"cannot write {path}: {reason}; choose a writable path.")


def format_value(value: Any) -> str:
    """Short, readable text for one table cell."""
    if isinstance(value, float):
        if value == 0 or math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if (abs(value) >= 1e-3 and abs(value) < 1e5) else f"{value:.3e}"
    return str(value)


TABLE_STYLES = ("text", "md", "csv", "latex")
"""Styles of :func:`format_table`: aligned text, Markdown, CSV and a LaTeX tabular."""


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
                 style: str = "text") -> str:
    """``rows`` under ``headers`` as a table in ``style`` (one of :data:`TABLE_STYLES`):
    left-aligned text with a header rule (for ``print``), Markdown, CSV, or a LaTeX
    ``tabular`` to paste into a paper."""
    if style not in TABLE_STYLES:
        raise BadInputError(f"unknown table style {style!r}; choose one of "
                            f"{', '.join(TABLE_STYLES)}.")
    cells = [[format_value(v) for v in row] for row in rows]
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([list(headers), *cells])
        return buffer.getvalue().rstrip("\n")
    if style == "md":
        def line(values):
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"
        return "\n".join([line(headers), "|" + "---|" * len(headers),
                          *(line(row) for row in cells)])
    if style == "latex":
        def line(values):
            return " & ".join(_latex_escape(v) for v in values) + r" \\"
        return "\n".join([r"\begin{tabular}{" + "l" * len(headers) + "}", r"\hline",
                          line(headers), r"\hline", *(line(row) for row in cells),
                          r"\hline", r"\end{tabular}"])
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    head = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([head, rule, *body])


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


STDOUT = "-"
"""The output path that means standard output (``--json -``, ``--plot -``)."""

_data_stdout: list = []  # the standard output "-" writes to while messages_to_stderr is active


@contextlib.contextmanager
def messages_to_stderr() -> Iterator[None]:
    """While active, ``print`` goes to standard error, and ``"-"`` outputs still go to the
    standard output: so ``lipcert ... --json - | jq`` receives nothing but the JSON."""
    _data_stdout.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _data_stdout.pop()


def _write_stdout(data: bytes) -> None:
    stream = _data_stdout[-1] if _data_stdout else sys.stdout
    stream.flush()
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        binary.write(data)
        binary.flush()
        return
    try:
        stream.write(data.decode())
    except UnicodeDecodeError:
        raise OutputError("standard output here takes text only; write the figure to a "
                          "file instead of '-'.") from None
    stream.flush()


def _creation_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_in_place(path: Path, data: bytes) -> None:
    """Write into an existing file that is not a regular file (a device, a FIFO)."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
    except OSError as err:
        raise _output_error(path, err) from err


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` without ever leaving a half-written file or replacing
    something that is not a regular file.

    - ``"-"`` writes to standard output.
    - A symbolic link is followed: its target is written, the link stays a link.
    - An existing device or FIFO (``/dev/stdout``, ``/dev/full``) is written in place, so an
      error such as "no space left" is reported instead of the device being replaced.
    - Otherwise the data goes to a temporary file beside ``path``, which is renamed over it;
      the new file gets the mode of the file it replaces, or ``0o666`` less the umask.
    """
    if str(path) == STDOUT:
        _write_stdout(data)
        return
    path = Path(path)
    try:
        existing = path.stat()  # follows symbolic links
    except FileNotFoundError:
        existing = None
    except OSError as err:
        raise _output_error(path, err) from err
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise OutputError(f"cannot write {path}: it is a folder; give a file name.")
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        _write_in_place(path, data)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else _creation_mode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _output_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise _output_error(path, err) from err
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` (``"-"``: standard output), atomically
    for regular files (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())


def new_figure(width: float = 6.0, height: float = 4.0):
    """A matplotlib figure and axes on the non-interactive Agg backend (works headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` at ``path`` (folders created) and close it; returns the path written.

    The suffix picks the format (.png, .pdf or .svg); a path without one gets ``.png``;
    ``"-"`` writes a PNG to standard output. Like :func:`atomic_write_bytes`, a symbolic
    link or a device is written through, never replaced.
    Raises :class:`BadInputError` for another suffix and :class:`OutputError` (an
    ``OSError``) when the file cannot be written.
    """
    import matplotlib.pyplot as plt

    if str(path) == STDOUT:
        buffer = io.BytesIO()
        try:
            fig.tight_layout()
            fig.savefig(buffer, dpi=120, format="png")
        finally:
            plt.close(fig)
        atomic_write_bytes(STDOUT, buffer.getvalue())
        return Path(STDOUT)
    path = Path(path)
    try:
        if not path.suffix:
            path = path.with_name(path.name + ".png")
        if path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
            raise BadInputError(f"cannot save a figure as {path}: use a name ending in "
                                f"{', '.join('.' + f for f in FIGURE_FORMATS)}.")
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder; give a file name.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.tight_layout()
            fig.savefig(path, dpi=120)
        except OSError as err:
            raise _output_error(path, err) from err
    finally:
        plt.close(fig)
    return path


def certified_accuracy_figure(curves: Mapping[str, Any], *, marks: Sequence[float] = (),
                              title: str | None = None,
                              xlabel: str = "l2 radius (inputs in [0, 1])"):
    """The certified-accuracy curve of every entry of ``curves`` (label -> one certified
    radius per point, 0 or less for points not certified), as the fraction of points whose
    radius exceeds r, on one figure; the x axis runs until every curve has reached 0.

    ``marks`` are radii drawn as dotted lines, each curve's value annotated there. Used by
    ``lipcert certify``, ``lipcert smooth``, ``lipcert demo`` and the benchmarks, so every
    curve looks the same.
    """
    import torch

    values = {name: torch.as_tensor(r).detach().double().cpu().reshape(-1)
              for name, r in curves.items()}
    finite = [float(r[torch.isfinite(r)].max()) for r in values.values()
              if bool(torch.isfinite(r).any())]
    top = max([*finite, *(1.1 * float(m) for m in marks), 0.0]) * 1.05 or 1.0
    grid = torch.linspace(0.0, top, 401, dtype=torch.float64)
    fig, ax = new_figure(6, 4)
    for index, (name, radii) in enumerate(values.items()):
        color = f"C{index}"
        curve = (radii[None, :] > grid[:, None]).double().mean(dim=1)
        ax.plot(grid.numpy(), curve.numpy(), color=color, label=name)
        for mark in marks:
            accuracy = float((radii > mark).double().mean())
            ax.plot([mark], [accuracy], "o", color=color, markersize=3.5)
            ax.annotate(f"{accuracy:.3f}", (mark, accuracy), textcoords="offset points",
                        xytext=(4, 4 + 9 * index), fontsize="x-small", color=color)
    for mark in marks:
        ax.axvline(mark, color="tab:gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(loc="upper right", fontsize="small")
    return fig
