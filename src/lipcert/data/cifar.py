"""Reader for the original CIFAR-10 python-pickle batches, without executing code.

Each batch is a pickled dict with ``b"data"`` (10000 x 3072 uint8, channel-major 32x32) and
``b"labels"`` (a list of ints). A pickle is a program: loaded by :mod:`pickle` it can run any
code, and even with its globals restricted it can spend memory and time exponential in its
size (a call applied again and again to a memoized argument, nested references expanded by a
later conversion, the hash of nested tuples, a memo index of 2^31 that makes CPython's
unpickler allocate a 16 GiB table). So batches are read by :class:`_BoundedLoader`, a small
pickle machine of its own over :func:`pickletools.genops` (which parses opcodes without
building objects and checks each counted length against the bytes left):

- only the opcodes that plain containers, numbers, strings and numpy arrays need are run
  (protocols 2 to 5); anything else, and every global but five, raises :class:`DataError`;
- the five globals are replaced by checked functions: ``_codecs.encode`` takes a str and the
  latin-1 codec only (output as long as its input); numpy's array reconstruction and
  ``_frombuffer`` accept numeric dtypes only and check that the array's size equals the bytes
  given BEFORE anything is allocated; ``numpy.dtype`` accepts plain numeric type codes;
- each opcode does work linear in the bytes it reads and the items it pops; every byte a call
  or an array's state creates is charged to a budget of ``4 * file size + 1 MiB``, so a call
  repeated on a memoized argument cannot multiply the data; dict keys must be str, bytes or
  ints below 2^63 (whose hash is cached or constant; a tuple's hash is exponential in depth);
- the file size is checked before reading (:data:`MAX_BATCH_BYTES`), the labels are checked to
  be a flat list of ints of the right length before any conversion, and error messages never
  print the objects built.
"""

from __future__ import annotations

import io
import math
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from lipcert.errors import DataError

MAX_BATCH_BYTES = 256 * 2**20
"""Largest batch file read (an original batch is 31 MB; protocol 2 may double the data)."""

_BUDGET_SLACK = 2**20
_DTYPE_CODE = re.compile(r"[<>|=]?[biuf][1248]")
_BYTE_ORDERS = frozenset("<>|=")
_LATIN1 = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})
_SMALL_KEYS = (str, bytes, int)


class _Refused(Exception):
    """Raised inside the loader; turned into a DataError naming the file."""


def _dtype_of(value: Any) -> np.dtype:
    if not isinstance(value, np.dtype) or value.kind not in "biuf" or value.hasobject \
            or value.names is not None or value.subdtype is not None:
        raise _Refused("an array dtype must be a plain numeric numpy dtype")
    return value


def _shape_of(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > 32 \
            or not all(type(n) is int and n >= 0 for n in value):
        raise _Refused("an array shape must be a tuple of non-negative ints")
    return value


class _BoundedLoader:
    """A pickle machine for plain data and numpy arrays whose work is linear in its input."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.budget = 4 * len(raw) + _BUDGET_SLACK
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        # bound methods are made once, so REDUCE can recognise them by identity
        encode, reconstruct, frombuffer = self._encode, self._reconstruct, self._frombuffer
        dtype = self._dtype
        self.globals: dict[tuple[str, str], Any] = {
            ("_codecs", "encode"): encode,
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.numeric", "_frombuffer"): frombuffer,
            ("numpy._core.numeric", "_frombuffer"): frombuffer,
            ("numpy", "dtype"): dtype,
            ("numpy", "ndarray"): np.ndarray,
        }
        self.callables = (encode, reconstruct, frombuffer, dtype)

    # -- budget and the checked globals ---------------------------------------------------
    def charge(self, n_bytes: int) -> None:
        self.budget -= n_bytes
        if self.budget < 0:
            raise _Refused(
                "the pickle builds more data than four times its own size (a "
                "decompression-bomb pattern)"
            )

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or not isinstance(encoding, str) \
                or encoding.lower() not in _LATIN1 or errors != "strict":
            raise _Refused("_codecs.encode is allowed only as str.encode('latin1')")
        self.charge(len(text))
        return text.encode("latin-1")

    def _dtype(self, code: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if isinstance(code, bytes):
            code = code.decode("latin-1")
        if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
            raise _Refused("numpy.dtype is allowed only for plain numeric type codes")
        return np.dtype(code, align=False, copy=True)  # a copy: BUILD sets its byte order

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not np.ndarray or _shape_of(shape) != (0,):
            raise _Refused("numpy's _reconstruct is allowed only as (ndarray, (0,), ...)")
        return np.ndarray((0,), dtype=np.uint8)

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        dtype, shape = _dtype_of(dtype), _shape_of(shape)
        if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused("numpy's _frombuffer needs a bytes buffer and order 'C' or 'F'")
        if math.prod(shape) * dtype.itemsize != len(buffer):
            raise _Refused("an array's shape does not match the bytes given for it")
        self.charge(len(buffer))
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    def _build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, np.dtype):
            if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], bytes):
                state = (state[0], state[1].decode("latin-1"), *state[2:])  # Python 2 str
            if not isinstance(state, tuple) or len(state) not in (8, 9) \
                    or state[1] not in _BYTE_ORDERS or any(s is not None for s in state[2:5]) \
                    or not all(type(s) is int for s in state[5:8]):
                raise _Refused("a numpy dtype's state must be that of a plain numeric dtype")
            inst.__setstate__(state)
            _dtype_of(inst)
            return
        if isinstance(inst, np.ndarray) and inst.shape == (0,) and inst.base is None:
            if not isinstance(state, tuple) or len(state) != 5 or type(state[0]) is not int:
                raise _Refused("an array's state must be (version, shape, dtype, fortran, data)")
            shape, dtype = _shape_of(state[1]), _dtype_of(state[2])
            if not isinstance(state[3], bool) or not isinstance(state[4], bytes):
                raise _Refused("an array's data must be bytes")
            if math.prod(shape) * dtype.itemsize != len(state[4]):
                raise _Refused("an array's shape does not match the bytes given for it")
            self.charge(len(state[4]))
            inst.__setstate__(state)
            return
        raise _Refused(f"BUILD is allowed on numpy arrays and dtypes only, not on a "
                       f"{type(inst).__name__}")

    # -- the machine ------------------------------------------------------------------------
    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise _Refused("an opcode needs a MARK that is not there")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def pop(self, n: int = 1) -> list[Any]:
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise _Refused("stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def set_items(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, dict) or len(items) % 2:
            raise _Refused("SETITEM(S) needs a dict and key/value pairs")
        for key, value in zip(items[::2], items[1::2], strict=True):
            if not isinstance(key, _SMALL_KEYS) or (isinstance(key, int) and key.bit_length() > 63):
                raise _Refused("dict keys must be str, bytes or small ints")
            target[key] = value

    def run(self) -> Any:
        stack = self.stack
        for opcode, arg, _ in pickletools.genops(io.BytesIO(self.raw)):
            name = opcode.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1 or self.marks:
                    raise _Refused("the pickle does not end with exactly one object")
                return stack.pop()
            if name == "MARK":
                self.marks.append(len(stack))
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                          "FLOAT", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                          "UNICODE", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                stack.append(arg)
            elif name in ("BINSTRING", "SHORT_BINSTRING"):  # Python 2 str, read as bytes
                stack.append(arg.encode("latin-1"))
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(tuple(self.pop(int(name[-1]))))
            elif name == "TUPLE":
                stack.append(tuple(self.pop_mark()))
            elif name == "LIST":
                stack.append(self.pop_mark())
            elif name == "DICT":
                target: dict[Any, Any] = {}
                self.set_items(target, self.pop_mark())
                stack.append(target)
            elif name in ("APPEND", "APPENDS"):
                items = self.pop() if name == "APPEND" else self.pop_mark()
                target = self.pop()[0]
                if not isinstance(target, list):
                    raise _Refused(f"{name} needs a list")
                target.extend(items)
                stack.append(target)
            elif name in ("SETITEM", "SETITEMS"):
                items = self.pop(2) if name == "SETITEM" else self.pop_mark()
                target = self.pop()[0]
                self.set_items(target, items)
                stack.append(target)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack:
                    raise _Refused("memoizing an empty stack")
                self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in self.memo:
                    raise _Refused(f"memo entry {arg} is read before it is written")
                stack.append(self.memo[arg])
            elif name == "POP":
                self.pop()
            elif name == "POP_MARK":
                self.pop_mark()
            elif name == "DUP":
                stack.append(self.pop()[0])
                stack.append(stack[-1])
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, attr = arg.partition(" ")
                else:
                    module, attr = self.pop(2)
                key = (module, attr)
                if not all(isinstance(part, str) for part in key) or key not in self.globals:
                    shown = ".".join(p for p in key if isinstance(p, str))[:80]
                    raise _Refused(
                        f"refusing to load global {shown}: a CIFAR-10 batch holds only plain "
                        "containers and numpy arrays"
                    )
                stack.append(self.globals[key])
            elif name == "REDUCE":
                func, args = self.pop(2)
                if not any(func is f for f in self.callables) or not isinstance(args, tuple):
                    raise _Refused("REDUCE may call only the allowed numpy/codecs functions")
                stack.append(func(*args))
            elif name == "BUILD":
                state = self.pop()[0]
                if not stack:
                    raise _Refused("BUILD without an object")
                self._build(stack[-1], state)
            else:
                raise _Refused(f"pickle opcode {name} is not allowed in a CIFAR-10 batch")
        raise _Refused("the pickle has no STOP opcode")


_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def load_batch_object(raw: bytes, path: Path) -> Any:
    """The object pickled in ``raw`` (read from ``path``), built by :class:`_BoundedLoader`.

    Raises :class:`DataError` naming ``path`` for anything it refuses or cannot parse.
    """
    try:
        return _BoundedLoader(raw).run()
    except (_Refused, ValueError, TypeError, IndexError, KeyError, EOFError, OverflowError) \
            as err:
        reason = str(err) if isinstance(err, _Refused) else f"{type(err).__name__}: {err}"
        raise DataError(
            f"cannot read CIFAR-10 batch {path}: {reason[:300]}. Expected the original "
            "python-pickle batch (a dict with b'data' and b'labels')."
        ) from None


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise DataError(
                f"{path} has {size} bytes, more than a CIFAR-10 batch can hold "
                f"({MAX_BATCH_BYTES}); point the data root at the original batches."
            )
        with path.open("rb") as handle:
            raw = handle.read(size + 1)  # read(n) allocates n bytes up front
    except OSError as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err}") from err
    if len(raw) > size:
        raise DataError(f"{path} grew while being read; read it again when it is complete.")
    return raw


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: images (N, 3, 32, 32) uint8, labels (N,) int64."""
    batch = load_batch_object(_read_file(path), path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} does not hold a dict; expected an original CIFAR-10 batch.")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        kind = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else \
            type(data).__name__
        raise DataError(
            f"{path}: b'data' must be a uint8 array of shape (N, 3072); got {kind}."
        )
    if isinstance(labels, np.ndarray):
        flat = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:  # checked element by element BEFORE numpy sees it (nested lists could explode)
        flat = isinstance(labels, list) and len(labels) == len(data) \
            and all(type(label) is int for label in labels)
    if not flat or len(labels) != len(data):
        raise DataError(
            f"{path}: b'labels' must be a flat list of ints, one label per image ({len(data)})."
        )
    labels = np.asarray(labels, dtype=np.int64)
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
