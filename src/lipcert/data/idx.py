"""Reader for the IDX format of the original MNIST and Fashion-MNIST files (gzipped or not).

IDX layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d,
then d big-endian uint32 sizes, then the data. Images have d = 3 (magic 0x00000803), labels
d = 1 (magic 0x00000801).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from lipcert.errors import DataError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file; raise :class:`DataError` naming the file on any inconsistency."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        kind = "images, uint8, 3 dims" if expected_magic == IMAGE_MAGIC else "labels, uint8, 1 dim"
        raise DataError(
            f"{path} has magic number 0x{magic:08x}; expected 0x{expected_magic:08x} ({kind})."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} bytes).")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes; its header {dims} announces {expected}. "
            "The file is truncated or corrupted: fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_file(folders: list[Path], stem: str) -> Path:
    """First existing ``stem`` or ``stem.gz`` in ``folders``."""
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{stem}[.gz] not found in any of: {', '.join(str(f) for f in folders)}."
    )


def read_idx_split(folders: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of an MNIST-style split."""
    prefix = "train" if split == "train" else "t10k"
    image_path = find_file(folders, f"{prefix}-images-idx3-ubyte")
    label_path = find_file(folders, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} "
            "labels; the two files must come from the same split."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path} holds label {labels.max()}; expected labels 0..9.")
    return images[:, None, :, :], labels.astype(np.int64)
