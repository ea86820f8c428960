"""Run the model tests single-threaded: their tensors are small, and on a machine shared by
several processes torch's intra-op thread pool spends far longer waiting at barriers than
computing (measured: 12 s with one thread against 55 s with two under load). The step-time
test opts out with the ``default_threads`` marker to report the usual configuration."""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "default_threads: keep torch's default thread count")


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
