"""--help consistency across commands, progress bars, output files, `python -m lipcert.cli`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lipcert.cli import build_parser, main
from lipcert.errors import BadInputError, LipcertError
from lipcert.report import OutputError, new_figure, save_figure, write_json

PNG = b"\x89PNG\r\n\x1a\n"


def help_text(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = parser._subparsers._group_actions[0].choices[name]
    return " ".join(parser.format_help().split())  # no line wrapping


@pytest.mark.parametrize("command", ["certify", "attack", "audit"])
def test_evaluation_commands_share_their_flags_and_say_their_defaults(command):
    text = help_text(command)
    for option in ("--data NAME", "--split {train,test}", "--root FOLDER", "--limit N",
                   "--batch-size N", "--device DEVICE", "--json [FILE]", "--no-progress"):
        assert option in text, option
    batch = 64 if command == "audit" else 256  # the audit's attacks run best in batches of 64
    assert "(default test)" in text and f"(default {batch})" in text and "(default auto)" in text
    assert "no progress bar" in text and "or the run folder holding it" in text


def test_same_names_for_the_same_things_everywhere():
    seeds = [help_text(c) for c in ("attack", "audit", "bound", "train", "demo")]
    assert all("--seed SEED" in t for t in seeds)
    plots = [help_text(*c) for c in (("certify",), ("audit",), ("data", "show"))]
    assert all("--plot FILE" in t and ".png, .pdf or .svg" in t for t in plots)
    devices = [help_text(c) for c in ("bound", "certify", "attack", "audit", "demo")]
    assert all("auto (cuda if available, else cpu)" in t for t in devices)
    assert "--root FOLDER" in help_text("train")  # alias of --data-root, as elsewhere
    train = help_text("train")
    assert "(default None)" not in train and "eps) (default" not in train


def test_audit_shows_a_progress_bar_and_plots(digits_ckpt, tmp_path, capsys):
    plot = tmp_path / "tight.png"
    code = main(["audit", str(digits_ckpt), "--limit", "12", "--batch-size", "6", "--steps",
                 "2", "--minimal", "deepfool", "--plot", str(plot)])
    captured = capsys.readouterr()
    assert code == 0
    assert "audit" in captured.err and "12/12" in captured.err  # the tqdm bar
    assert "violations: 0" in captured.out and f"wrote {plot}" in captured.out
    assert plot.read_bytes()[:8] == PNG


def test_certify_progress_bar_and_titled_plot(digits_ckpt, tmp_path, capsys):
    plot = tmp_path / "curve.svg"
    assert main(["certify", str(digits_ckpt), "--eps", "0.05", "0.1", "--limit", "40",
                 "--batch-size", "16", "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert "certify" in captured.err and "3/3" in captured.err
    svg = plot.read_text()
    assert "certified accuracy on digits test, 40 points" in svg  # the title
    assert "l2 radius (inputs in [0, 1])" in svg


def test_a_short_prefix_of_a_sorted_data_set_is_flagged(mnist_ckpt, capsys, monkeypatch):
    from torch.utils.data import TensorDataset

    from lipcert import data

    real_load = data.load

    def sorted_by_label(name, split="train", root=None):
        x, y = real_load(name, split, root=root).tensors
        order = y.argsort(stable=True)
        return TensorDataset(x[order], y[order])

    monkeypatch.setattr(data, "load", sorted_by_label)
    assert main(["certify", str(mnist_ckpt), "--eps", "0.5", "--limit", "30",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "hold only 1 of its 10 classes" in err


def test_bound_on_a_run_folder_with_json(digits_run, capsys):
    assert main(["bound", str(digits_run), "--json", "--lower-steps", "2",
                 "--lower-starts", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["checkpoint"].endswith("model.safetensors")
    assert payload["lower_bound"] <= payload["upper_bound"] * (1 + 1e-6)


def test_output_errors_are_lipcert_errors_and_os_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="file is a file, not a folder") as info:
        write_json(blocker / "sub" / "x.json", {})
    assert isinstance(info.value, OSError) and isinstance(info.value, LipcertError)
    with pytest.raises(OutputError, match="is a folder"):
        write_json(tmp_path, {})
    fig, _ = new_figure()
    with pytest.raises(BadInputError, match=r"\.png, \.pdf, \.svg"):
        save_figure(fig, tmp_path / "plot.txt")
    fig, _ = new_figure()
    written = save_figure(fig, tmp_path / "plot")
    assert written == tmp_path / "plot.png" and written.read_bytes()[:8] == PNG


def test_python_dash_m_lipcert_cli():
    result = subprocess.run([sys.executable, "-m", "lipcert.cli", "certify", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--last-layer" in result.stdout


def test_training_over_an_existing_run_is_refused_without_overwrite(tmp_path, capsys):
    argv = ["train", "--data", "digits", "--model", "sll-s", "--width", "4", "--depth", "1",
            "--epochs", "1", "--batch-size", "256", "--no-certify", "--no-progress", "--out",
            str(tmp_path / "run")]
    assert main(argv) == 0
    assert "training run" not in capsys.readouterr().err
    before = (tmp_path / "run" / "log.jsonl").read_bytes()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--overwrite" in err
    assert (tmp_path / "run" / "log.jsonl").read_bytes() == before  # nothing touched
    assert main([*argv, "--overwrite"]) == 0
    assert "replacing the training run" in capsys.readouterr().err
