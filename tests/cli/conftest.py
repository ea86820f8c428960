"""Tiny checkpoints for the CLI tests: an 8x8 one (digits) and a 28x28 one (mnist-5k)."""

from __future__ import annotations

import pytest
import torch

from lipcert import models

SMALL = dict(in_channels=1, num_classes=10, width=4, depth=1, dense_width=16, dense_depth=1)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A run folder holding model.safetensors (+ model.json) of an 8x8 sll-s for digits."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("digits-run")
    models.save(models.build("sll-s", image_size=8, **SMALL), folder / "model.safetensors",
                dataset="digits")
    return folder


@pytest.fixture(scope="session")
def digits_ckpt(digits_run):
    return digits_run / "model.safetensors"


@pytest.fixture(scope="session")
def mnist_ckpt(tmp_path_factory):
    """A 28x28 sll-s checkpoint trained (nominally) on mnist-5k."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mnist-run") / "model.safetensors"
    models.save(models.build("sll-s", image_size=28, **SMALL), path, dataset="mnist-5k")
    return path
