"""Hostile IDX files: a header is checked before its payload is read (issue #13, file-reading
siblings of item 15). Memory is measured with tracemalloc."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import numpy as np
import pytest
from test_local_files import make_mnist_folder, write_idx

from lipcert import data
from lipcert.errors import DataError


def _peak_of_failing_load(root, match: str) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match):
            data.load("mnist", "test", root=root)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_is_refused_from_its_header(tmp_path):
    make_mnist_folder(tmp_path, compress=True)
    header = struct.pack(">IIII", 0x0803, 10**6, 28, 28)  # announces 784 MB
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header)
        handle.write(bytes(2**26))  # 64 MiB of zeros in a 65 kB file
    peak = _peak_of_failing_load(tmp_path, "t10k-images.*announces")
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_a_truncated_payload_costs_only_what_is_there(tmp_path):
    make_mnist_folder(tmp_path, compress=True)
    header = struct.pack(">IIII", 0x0803, 300_000, 28, 28)  # 235 MB announced, 1 MiB present
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + bytes(2**20))
    peak = _peak_of_failing_load(tmp_path, "t10k-images.*truncated")
    assert peak < 40 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_images_of_another_size_are_refused(tmp_path):
    make_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"items of shape \(32, 32\); expected \(28, 28\)"):
        data.load("mnist", "test", root=tmp_path)


def test_corrupted_gzip_stream_is_a_data_error(tmp_path):
    make_mnist_folder(tmp_path, compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(range(40))  # inside the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-images"):
        data.load("mnist", "test", root=tmp_path)
