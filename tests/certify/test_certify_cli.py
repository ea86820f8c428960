"""``lipcert certify CHECKPOINT --eps ...`` on a checkpoint written by lipcert.models.save."""

from __future__ import annotations

import json

import pytest
import torch

from lipcert import data, models
from lipcert.certify import certified_accuracy, lipschitz_radii
from lipcert.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = models.build("sll-s", image_size=8, width=4, depth=1, dense_width=16, dense_depth=1)
    path = tmp_path_factory.mktemp("certify") / "sll.safetensors"
    models.save(model, path, dataset="digits")
    return path


def test_certify_table_json_and_plot(checkpoint, tmp_path, capsys):
    out_json, out_png = tmp_path / "c.json", tmp_path / "curve.png"
    argv = ["certify", str(checkpoint), "--data", "digits", "--eps", "0.02", "0.1", "--limit",
            "120", "--batch-size", "32", "--device", "cpu", "--no-progress", "--json",
            str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    assert "certified accuracy" in capsys.readouterr().out
    assert out_png.stat().st_size > 1000
    result = json.loads(out_json.read_text())
    # Independent path: one call on the whole set, no batching.
    model = models.load(checkpoint).eval()
    x, y = data.load("digits", "test").tensors
    x, y = x[:120].to(torch.float64), y[:120]
    expected = certified_accuracy(lipschitz_radii(model, x, y), [0.02, 0.1])
    assert [row["accuracy"] for row in result["certified_accuracy"]] == pytest.approx(
        [expected[0.02], expected[0.1]])
    assert result["points"] == 120


def test_eps_is_required(checkpoint):
    with pytest.raises(SystemExit):
        main(["certify", str(checkpoint)])
