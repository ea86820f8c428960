"""Reader for the original CIFAR-10 python-pickle batches, without executing code.

Each batch is a pickled dict with ``b"data"`` (10000 x 3072 uint8, channel-major 32x32) and
``b"labels"`` (a list of ints). A pickle can run arbitrary code when loaded, so batches are read
with :class:`SafeUnpickler`, which only rebuilds plain containers and numpy arrays and refuses
any other global.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from lipcert.errors import DataError

# The only globals a CIFAR batch needs: numpy's array and dtype reconstruction, and the
# latin-1 encoder protocol-2 pickles use to rebuild bytes (a pure str -> bytes function).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that allows plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only plain "
            "containers and numpy arrays"
        )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: images (N, 3, 32, 32) uint8, labels (N,) int64."""
    try:
        raw = path.read_bytes()
        batch = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as err:
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {err}. Expected the original python-pickle "
            "batch (a dict with b'data' and b'labels')."
        ) from err
    if not isinstance(batch, dict):
        raise DataError(f"{path} does not hold a dict; expected an original CIFAR-10 batch.")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: b'data' must be a uint8 array of shape (N, 3072); got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}."
        )
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (len(data),):
        raise DataError(f"{path}: b'labels' must list one label per image ({len(data)}).")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be in 0..9; found {labels.min()}..{labels.max()}.")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_split(folders: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """All batches of a split: train = data_batch_1..5, test = test_batch."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for folder in folders:
        if all((folder / n).is_file() for n in names):
            parts = [read_batch(folder / n) for n in names]
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    raise DataError(
        f"CIFAR-10 {split} batches ({', '.join(names)}) not found in any of: "
        f"{', '.join(str(f) for f in folders)}."
    )
