"""`lipcert smooth`: table, JSON, plot, warnings, and every argument checked before any work."""

from __future__ import annotations

import json

import pytest
import torch

from lipcert import models
from lipcert.certify import Smoothed
from lipcert.cli import main
from lipcert.data import load

SMALL = dict(in_channels=1, num_classes=10, width=4, depth=1, dense_width=16, dense_depth=1)


@pytest.fixture(scope="module")
def noisy_ckpt(tmp_path_factory):
    """A digits checkpoint whose spec says it was trained with Gaussian noise 0.25."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("noisy-run") / "model.safetensors"
    models.save(models.build("sll-s", image_size=8, **SMALL), path, dataset="digits",
                extra={"epoch": 1, "metrics": {"noise": "gaussian:0.25"}})
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_smooth_prints_a_table_and_writes_json_and_plot(noisy_ckpt, tmp_path, capsys):
    out_json, out_png = tmp_path / "s.json", tmp_path / "c.png"
    code, out, err = run(["smooth", noisy_ckpt, "--sigma", "0.25", "0.5", "--law", "gaussian",
                          "laplace", "--n", "200", "--n0", "20", "--limit", "12",
                          "--radii", "0", "0.1", "--json", out_json, "--plot", out_png,
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "gaussian 0.25 (l2)" in out and "laplace 0.5 (l1)" in out and "abstain" in out
    assert "warning" not in err
    payload = json.loads(out_json.read_text())
    assert len(payload["runs"]) == 4 and payload["trained_noise"] == "gaussian:0.25"
    assert out_png.stat().st_size > 1000
    # The JSON agrees with the library called directly (same seed, same first indices).
    first = payload["runs"][0]
    model = models.load(noisy_ckpt).eval()
    x, y = load("digits", "test").tensors
    result = Smoothed(model, 10, sigma=0.25).certify(x[:12], n0=20, n=200, alpha=0.001)
    expected = float((result.prediction == y[:12]).double().mean())
    assert first["certified_accuracy"][0] == {"radius": 0.0, "accuracy": expected}
    assert first["abstention_rate"] == float(result.abstained.double().mean())


def test_multi_sigma_and_a_warning_for_a_checkpoint_trained_without_noise(digits_ckpt, tmp_path,
                                                                           capsys):
    out_json = tmp_path / "m.json"
    code, out, err = run(["smooth", digits_ckpt, "--sigma", "0.25", "--multi-sigma", "0.2",
                          "--n", "100", "--n0", "10", "--limit", "4", "--json", out_json,
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "trained without noise" in err
    runs = json.loads(out_json.read_text())["runs"]
    assert [r["probes"] for r in runs] == [[], [0.2]]
    assert runs[1]["max_gain_over_cohen"] >= 0


@pytest.mark.parametrize("argv,phrase", [
    (["--sigma", "0"], "--sigma"),
    (["--sigma", "-1"], "--sigma"),
    (["--n", "0"], "--n must be >= 1"),
    (["--n0", "0"], "--n0 must be >= 1"),
    (["--alpha", "1.5"], "--alpha"),
    (["--alpha", "0"], "--alpha"),
    (["--n", "9"], "n >= 10 is needed to certify anything at alpha=0.001"),
    (["--law", "laplace", "--multi-sigma", "0.2"], "--law gaussian"),
    (["--multi-sigma", "0"], "--multi-sigma"),
    (["--radii", "-1"], "--radii"),
    (["--limit", "0"], "--limit"),
    (["--data", "mnist-5k"], "shape"),
])
def test_bad_arguments_give_one_error_line(noisy_ckpt, capsys, argv, phrase):
    code, out, err = run(["smooth", noisy_ckpt, "--no-progress", *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines[-1].startswith("lipcert: error: "), err
    assert phrase in lines[-1]
    assert "Traceback" not in err
    assert "randomized smoothing" not in out  # nothing was computed


def test_law_choice_is_checked_by_argparse(noisy_ckpt, capsys):
    with pytest.raises(SystemExit) as info:
        main(["smooth", str(noisy_ckpt), "--law", "cauchy"])
    assert info.value.code == 2
