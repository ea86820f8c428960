"""Optional TensorBoard logging of the per-epoch record (``pip install tensorboard``).

The JSONL log (``log.jsonl``) is always written; with ``tensorboard=True`` every numeric field
of each epoch's record is also written as a scalar under ``OUT/tensorboard`` (rank 0 only),
to watch with ``tensorboard --logdir OUT``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lipcert.errors import BadInputError, MissingDependencyError

__all__ = ["open_writer", "log_epoch", "TENSORBOARD_FOLDER"]

TENSORBOARD_FOLDER = "tensorboard"


def open_writer(out: Path | None) -> Any:
    """A ``SummaryWriter`` on ``out/tensorboard``; :class:`BadInputError` without a run folder
    and :class:`MissingDependencyError` without the tensorboard package."""
    if out is None:
        raise BadInputError("tensorboard logging needs a run folder (out=...).")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise MissingDependencyError("tensorboard logging needs the tensorboard package: pip "
                                     "install 'lipcert[tensorboard]' (the log.jsonl log needs "
                                     "nothing).") from err
    return SummaryWriter(log_dir=str(Path(out) / TENSORBOARD_FOLDER))


def log_epoch(writer: Any, record: dict[str, Any]) -> None:
    """Write every finite number of ``record`` as a scalar at step ``record["epoch"]``."""
    for key, value in record.items():
        if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            writer.add_scalar(key, value, record["epoch"])
    writer.flush()
