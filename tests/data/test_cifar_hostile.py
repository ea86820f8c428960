"""Hostile CIFAR-10 batches built opcode by opcode: each must raise a DataError naming the file,
quickly and with bounded memory (issue #13 item 15).

Every pickle here is tiny; on the old reader (pickle.Unpickler with five allowed globals) each
one made Python allocate or compute an amount exponential (or 2^31-fold) in its size. Memory
is measured with tracemalloc, which sees CPython's and numpy's allocations.
"""

from __future__ import annotations

import pickle
import struct
import time
import tracemalloc

import numpy as np
import pytest

from lipcert import data
from lipcert.data import cifar
from lipcert.errors import DataError

PEAK_LIMIT = 16 * 2**20  # bytes; every attack below would need far more on the old reader
TIME_LIMIT = 2.0  # seconds, generous for a loaded machine; the new reader needs milliseconds

PROTO2 = b"\x80\x02"
STOP = b"."


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _bytes(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def _get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def _batch(data_ops: bytes, labels_ops: bytes) -> bytes:
    """A dict {b'data': <data_ops>, b'labels': <labels_ops>} in protocol 2."""
    return PROTO2 + b"}(" + _bytes(b"data") + data_ops + _bytes(b"labels") + labels_ops + b"u" \
        + STOP


def _empty_image_array() -> bytes:
    """Opcodes pushing a valid (1, 3072) uint8 array (numpy's own protocol-2 form)."""
    return pickle.dumps(np.zeros((1, 3072), np.uint8), protocol=2)[2:-1]


def _expect_refusal(tmp_path, raw: bytes, match: str = "test_batch") -> None:
    (tmp_path / "test_batch").write_bytes(raw)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError, match=match):
            data.load("cifar10", "test", root=tmp_path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB for a {len(raw)}-byte pickle"
    assert elapsed < TIME_LIMIT, f"{elapsed:.2f} s for a {len(raw)}-byte pickle"


def test_nested_hex_encoding_is_refused(tmp_path):
    # _codecs.encode(_codecs.encode(..., 'hex'), 'hex'): the data doubles per level
    levels = 24  # 16 bytes -> 256 MiB
    raw = PROTO2 + _global("_codecs", "encode") + _put(0) + _get(0) * (levels - 1)
    raw += _bytes(b"A" * 16) + (_unicode("hex") + b"\x86R") * levels + STOP
    _expect_refusal(tmp_path, raw, "test_batch")


def test_a_call_repeated_on_a_memoized_argument_is_bounded(tmp_path):
    # one 64 kB string latin1-encoded 4000 times into a list: 256 MB from a 90 kB file
    text = _unicode("a" * 65536)
    raw = PROTO2 + b"]" + _put(0) + b"(" + _global("_codecs", "encode") + _put(1) + text \
        + _unicode("latin1") + b"\x86" + _put(2) + b"R"
    raw += (_get(1) + _get(2) + b"R") * 4000 + b"e" + STOP
    _expect_refusal(tmp_path, raw, "test_batch")


def _nested_list(fanout: int, depth: int) -> bytes:
    """L0 = [0] * fanout; L(k+1) = [Lk] * fanout (memo references): fanout^(depth+1) ints."""
    ops = b"](" + b"K\x00" * fanout + b"e" + _put(0)
    for level in range(1, depth + 1):  # POP ("0") the previous level: only the last stays
        ops += b"0](" + _get(level - 1) * fanout + b"e" + _put(level)
    return ops


def test_labels_of_nested_references_are_checked_before_expansion(tmp_path):
    raw = _batch(_empty_image_array(), _nested_list(10, 6))  # 10^7 labels on expansion
    _expect_refusal(tmp_path, raw, "test_batch")


def test_self_referencing_labels_are_refused(tmp_path):
    labels = b"]" + _put(900) + _get(900) + b"a"  # L = [L]
    _expect_refusal(tmp_path, _batch(_empty_image_array(), labels), "flat list of ints")


def test_a_huge_memo_index_is_not_a_huge_table(tmp_path):
    # CPython's unpickler grows its memo array to the index: 2^27 * 2 slots = 2 GiB
    raw = PROTO2 + b"]" + _put(2**27) + STOP
    _expect_refusal(tmp_path, raw, "test_batch")


def test_nested_tuple_keys_are_refused_before_hashing(tmp_path):
    # T(k+1) = (Tk, Tk): hashing T_28 visits 2^28 tuples (8 s on the old reader; T_60 never ends)
    ops = b")" + _put(0)
    for level in range(1, 29):
        ops += b"0" + _get(level - 1) + _get(level - 1) + b"\x86" + _put(level)
    raw = PROTO2 + b"}" + ops + b"K\x00s" + STOP
    _expect_refusal(tmp_path, raw, "test_batch")


@pytest.mark.parametrize(
    "ops",
    [
        # ndarray((10^5, 3072), 'u1'): 300 MB of uninitialised memory that passed every check
        _global("numpy", "ndarray") + b"J\xa0\x86\x01\x00M\x00\x0c\x86" + _unicode("u1")
        + b"\x86R",
        # numpy's _reconstruct with a 2^28-entry shape, before the state is even looked at
        _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + b"J\x00\x00\x00\x10\x85" + _bytes(b"b") + b"\x87R",
        # an object dtype
        _global("numpy", "dtype") + _unicode("O") + b"\x85R",
    ],
    ids=["ndarray-call", "reconstruct-shape", "object-dtype"],
)
def test_arrays_are_sized_before_they_are_built(tmp_path, ops):
    raw = _batch(ops, b"]" + b"(" + b"K\x00" * 3 + b"e")
    _expect_refusal(tmp_path, raw, "test_batch")


def test_array_state_that_does_not_match_its_bytes_is_refused(tmp_path):
    good = _empty_image_array()
    bad = good.replace(b"M\x00\x0c", b"M\x00\x18")  # shape (1, 6144) for 3072 bytes
    assert bad != good
    _expect_refusal(tmp_path, _batch(bad, b"](K\x00e"), "does not match the bytes")


def test_other_opcodes_and_globals_are_refused(tmp_path):
    _expect_refusal(tmp_path, PROTO2 + _global("builtins", "eval") + STOP, "refusing to load")
    _expect_refusal(tmp_path, PROTO2 + b"}" + b"(" + b"\x8f" + STOP, "test_batch")  # set
    _expect_refusal(tmp_path, PROTO2 + b"}" + b"\x82\x01" + STOP, "opcode EXT1")


def test_an_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 4096)
    (tmp_path / "test_batch").write_bytes(b"\0" * 5000)
    with pytest.raises(DataError, match="test_batch has 5000 bytes"):
        data.load("cifar10", "test", root=tmp_path)


def _python2_batch(n: int) -> tuple[bytes, np.ndarray, list[int]]:
    """A batch as Python 2's cPickle wrote the originals: BINSTRING data, int dtype flags."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    array = (
        _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + b"K\x00\x85U\x01b\x87R"
        + b"(K\x01" + b"M" + struct.pack("<H", n) + b"M\x00\x0c\x86"
        + _global("numpy", "dtype") + b"U\x02u1K\x00K\x01\x87R"
        + b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T" + struct.pack("<I", images.nbytes) + images.tobytes() + b"tb"
    )
    label_ops = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    raw = PROTO2 + b"}(U\x04data" + array + b"U\x06labels" + label_ops + b"u" + STOP
    return raw, images, labels


def test_python2_style_batches_still_load(tmp_path):
    raw, images, labels = _python2_batch(300)
    (tmp_path / "test_batch").write_bytes(raw)
    assert pickle.loads(raw, encoding="bytes")[b"labels"] == labels  # the fixture is valid
    loaded_images, loaded_labels = data.load("cifar10", "test", root=tmp_path).tensors
    assert loaded_labels.tolist() == labels
    np.testing.assert_array_equal(
        (loaded_images.numpy() * 255).round().astype(np.uint8).reshape(300, -1), images
    )


def test_a_full_size_batch_reads_in_linear_time(tmp_path):
    batch = {
        b"labels": np.random.default_rng(0).integers(0, 10, 10000).tolist(),
        b"data": np.random.default_rng(1).integers(0, 256, (10000, 3072), dtype=np.uint8),
        b"filenames": [f"f{i}.png".encode() for i in range(10000)],
    }
    path = tmp_path / "test_batch"
    for protocol in (2, 5):
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        start = time.perf_counter()
        images, labels = cifar.read_batch(path)
        assert time.perf_counter() - start < 10.0
        np.testing.assert_array_equal(images.reshape(10000, -1), batch[b"data"])
        assert labels.tolist() == batch[b"labels"]
