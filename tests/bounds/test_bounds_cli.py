"""``lipcert bound CHECKPOINT`` on checkpoints written by lipcert.models.save."""

from __future__ import annotations

import json

import pytest
import torch

from lipcert import models
from lipcert.bounds import lipschitz_bound
from lipcert.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = models.build("lmt-mnist", image_size=8, width=4, dense_width=16)
    path = tmp_path_factory.mktemp("bound") / "lmt.safetensors"
    models.save(model, path, dataset="digits", normalization={"mean": [0.5], "std": [0.25]})
    return path


def test_json_output_matches_the_library(checkpoint, capsys):
    assert main(["bound", str(checkpoint), "--json", "--lower-steps", "5"]) == 0
    payload = json.loads(capsys.readouterr().out)
    model = models.load(checkpoint).eval()
    expected = 4.0 * float(lipschitz_bound(model, torch.rand(1, 1, 8, 8)))  # 1 / std = 4
    assert payload["upper_bound"] == pytest.approx(expected)
    assert payload["guarantee"] == "upper" and payload["input_shape"] == [1, 8, 8]
    assert 0 < payload["lower_bound"] <= payload["upper_bound"]
    assert payload["layers"][0]["kind"] == "Normalize"


def test_table_output(checkpoint, capsys):
    argv = ["bound", str(checkpoint), "--lower-steps", "0", "--input-shape", "1", "8", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Lipschitz upper bound" in out and "Conv2d" in out and "running" in out


def test_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert main(["bound", str(tmp_path / "none.safetensors")]) == 1
    assert "error" in capsys.readouterr().err
