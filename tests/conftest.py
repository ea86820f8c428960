"""Shared test set-up.

Every test runs torch on one intra-op thread (restored afterwards): the tests use small tensors,
and on a 2-core machine shared with other processes two OpenMP threads spend far longer waiting
on each other than computing (measured here: the linalg tests took 89 s with two threads and
6 s with one under load). A test marked ``default_threads`` keeps torch's setting (e.g. to
report the usual step time).

Tests under ``tests/bounds`` and ``tests/certify`` also run with float64 as the default dtype,
since their oracles (explicit Jacobians, exact SVDs) need it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FLOAT64_FOLDERS = {"bounds", "certify"}


@pytest.fixture(autouse=True)
def single_thread(request):
    if request.node.get_closest_marker("default_threads"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def float64_where_oracles_need_it(request):
    if Path(str(request.path)).parent.name not in FLOAT64_FOLDERS:
        yield
        return
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
