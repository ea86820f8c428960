import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The attack tests run many tiny ops: one thread avoids the (large) cost of OpenMP
    threads competing for a loaded CPU. The previous setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
