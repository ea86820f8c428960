"""Two gloo processes on CPU take the same steps as one process (up to float rounding)."""

from __future__ import annotations

import socket

import safetensors.torch
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import digits, tiny_mlp

from lipcert.losses import MarginCrossEntropy
from lipcert.train import train

SETTINGS = dict(seed=3, batch_size=64, lr=0.01, certify=False, progress=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        train_data, test_data = digits()
        train(tiny_mlp(0), train_data, test_data, MarginCrossEntropy(0.5, 0.5), 2, out=out,
              **SETTINGS)
    finally:
        dist.destroy_process_group()


def model_tensors(folder) -> dict[str, torch.Tensor]:
    tensors = safetensors.torch.load_file(str(folder / "train_state.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_two_processes_match_one(tmp_path):
    train_data, test_data = digits()
    single = train(tiny_mlp(0), train_data, test_data, MarginCrossEntropy(0.5, 0.5), 2,
                   out=tmp_path / "one", **SETTINGS)
    mp.spawn(worker, args=(2, free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    expected = {f"model.{k}": v for k, v in single.model.state_dict().items()}
    got = model_tensors(tmp_path / "two")
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5)
    # the weights moved: the comparison is not between two untouched initializations
    assert not torch.allclose(got["model.1.weight"], tiny_mlp(0)[1].weight)
    # only rank 0 wrote: one log line per epoch
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2
