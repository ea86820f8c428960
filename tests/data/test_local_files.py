"""Local data sets: synthetic IDX and CIFAR files written here, read back by the loaders."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from lipcert import data
from lipcert.errors import DataError


def write_idx(path, array, compress=False):
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist_folder(folder, n_train=30, n_test=10, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path, compress, name):
    arrays = make_mnist_folder(tmp_path, compress=compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = data.load(name, split, root=tmp_path).tensors
        raw_images, raw_labels = arrays[prefix]
        assert images.shape == (len(raw_labels), 1, 28, 28)
        torch.testing.assert_close(images[:, 0], torch.from_numpy(raw_images / 255.0).float())
        assert labels.tolist() == raw_labels.tolist()


def test_idx_in_torchvision_style_subfolder(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    make_mnist_folder(folder)
    assert len(data.load("mnist", "test", root=tmp_path)) == 10


def test_idx_truncated_file_raises_naming_it(tmp_path):
    make_mnist_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        data.load("mnist", "train", root=tmp_path)


def test_idx_truncated_gzip_raises(tmp_path):
    make_mnist_folder(tmp_path, compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="t10k-images"):
        data.load("mnist", "test", root=tmp_path)


def test_idx_wrong_magic_raises(tmp_path):
    make_mnist_folder(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[3] = 0x03  # labels file now claims 3 dimensions
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="magic number"):
        data.load("mnist", "test", root=tmp_path)


def test_idx_count_mismatch_raises(tmp_path):
    make_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, dtype=np.uint8))
    with pytest.raises(DataError, match="10 images but .* 9 labels"):
        data.load("mnist", "test", root=tmp_path)


def test_missing_root_and_files_raise(tmp_path):
    with pytest.raises(DataError, match="not embedded"):
        data.load("mnist")
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        data.load("mnist", root=tmp_path)


def write_cifar_batch(path, n, seed, protocol=2):
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"synthetic batch",
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return batch


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_round_trip(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [write_cifar_batch(folder / f"data_batch_{i}", 4, i, protocol) for i in range(1, 6)]
    test_batch = write_cifar_batch(folder / "test_batch", 3, 99, protocol)
    images, labels = data.load("cifar10", "train", root=tmp_path).tensors
    assert images.shape == (20, 3, 32, 32)
    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32) / 255.0
    torch.testing.assert_close(images, torch.from_numpy(expected).float())
    assert labels.tolist() == sum((b[b"labels"] for b in batches), [])
    images, labels = data.load("cifar10", "test", root=folder).tensors
    assert labels.tolist() == test_batch[b"labels"] and images.shape == (3, 3, 32, 32)


class Payload:
    """Unpickling this would run code (os.system) if the unpickler allowed it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_refuses_code_in_pickle(tmp_path):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing to load global"):
        data.load("cifar10", "test", root=tmp_path)


def test_cifar_truncated_and_malformed_raise(tmp_path):
    write_cifar_batch(tmp_path / "test_batch", 5, 0)
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="test_batch"):
        data.load("cifar10", "test", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    )
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        data.load("cifar10", "test", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    )
    with pytest.raises(DataError, match="one label per image"):
        data.load("cifar10", "test", root=tmp_path)


def test_cifar_missing_batches_raise(tmp_path):
    write_cifar_batch(tmp_path / "data_batch_1", 2, 0)
    with pytest.raises(DataError, match="data_batch_2"):
        data.load("cifar10", "train", root=tmp_path)
