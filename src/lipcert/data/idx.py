"""Reader for the IDX format of the original MNIST and Fashion-MNIST files (gzipped or not).

IDX layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d,
then d big-endian uint32 sizes, then the data. Images have d = 3 (magic 0x00000803), labels
d = 1 (magic 0x00000801).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from lipcert.errors import DataError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


MAX_IDX_BYTES = 2**28
"""Largest IDX payload read (256 MiB; the MNIST training images are 47 MB)."""


def _read_exactly(handle, n_bytes: int, path: Path, what: str) -> bytes:
    """``n_bytes`` from ``handle`` in chunks (never allocating more than what arrives)."""
    chunks, left = [], n_bytes
    while left > 0:
        chunk = handle.read(min(left, 2**24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    raw = b"".join(chunks)
    if len(raw) != n_bytes:
        raise DataError(
            f"{path} is truncated inside its {what}: {len(raw)} of {n_bytes} bytes. The file is "
            "truncated or corrupted: fetch it again."
        )
    return raw


def read_idx(
    path: Path, expected_magic: int, item_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Read one IDX file; raise :class:`DataError` naming the file on any inconsistency.

    The header is read and checked first (magic number, then ``item_shape``, the sizes after
    the first, when given, and a payload of at most :data:`MAX_IDX_BYTES`); only then is the
    announced number of bytes read, in chunks, so a corrupted header or a gzip bomb costs no
    more memory than the payload it announces.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4:
                raise DataError(
                    f"{path} is truncated: {len(head)} bytes, not even an IDX header."
                )
            magic = int.from_bytes(head, "big")
            if magic != expected_magic:
                kind = "images, uint8, 3 dims" if expected_magic == IMAGE_MAGIC else \
                    "labels, uint8, 1 dim"
                raise DataError(
                    f"{path} has magic number 0x{magic:08x}; expected 0x{expected_magic:08x} "
                    f"({kind})."
                )
            ndim = magic & 0xFF
            sizes = _read_exactly(handle, 4 * ndim, path, "header")
            dims = [int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim)]
            if item_shape is not None and tuple(dims[1:]) != tuple(item_shape):
                raise DataError(
                    f"{path} holds items of shape {tuple(dims[1:])}; expected {tuple(item_shape)}."
                )
            n_bytes = math.prod(dims)
            if n_bytes > MAX_IDX_BYTES:
                raise DataError(
                    f"{path} announces {dims} = {n_bytes} bytes, more than the {MAX_IDX_BYTES} "
                    "this reader accepts; the header is corrupted."
                )
            payload = _read_exactly(handle, n_bytes, path, f"data (header {dims})")
            if handle.read(1):
                raise DataError(
                    f"{path} holds more bytes than its header {dims} announces "
                    f"({n_bytes + 4 + 4 * ndim}). The file is corrupted: fetch it again."
                )
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


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
    images = read_idx(image_path, IMAGE_MAGIC, (28, 28))
    labels = read_idx(label_path, LABEL_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} "
            "labels; the two files must come from the same split."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path} holds label {labels.max()}; expected labels 0..9.")
    return images[:, None, :, :], labels.astype(np.int64)
