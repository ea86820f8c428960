"""Bad input to every command ends in one `lipcert: error: ...` line (exit status 1), or in
argparse's usage error (exit status 2), never in a traceback; nothing heavy runs first."""

from __future__ import annotations

import pytest
import torch

from lipcert.cli import error_text, main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *phrases: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error message"
    assert lines[-1].startswith("lipcert: error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[-1], (phrase, lines[-1])


@pytest.fixture
def bad_paths(tmp_path, digits_ckpt):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.json").write_text(digits_ckpt.with_suffix(".json").read_text())
    (corrupt / "model.safetensors").write_bytes(digits_ckpt.read_bytes()[:100])
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    return {"tmp": tmp_path, "corrupt": corrupt / "model.safetensors", "file": a_file,
            "empty": tmp_path}


CHECKPOINT_CASES = [
    # (argv after the command and checkpoint, phrases the error line must hold)
    ("missing", ["none.safetensors: no such file or folder", "pass a run folder"]),  # #14
    ("empty", ["is a folder without model.safetensors"]),
    ("json", ["JSON spec", "model.safetensors instead"]),
    ("corrupt", ["truncated"]),
]


@pytest.mark.parametrize("command", ["bound", "certify", "attack", "audit"])
@pytest.mark.parametrize("which, phrases", CHECKPOINT_CASES)
def test_bad_checkpoint_paths(command, which, phrases, bad_paths, digits_ckpt, capsys):
    path = {"missing": bad_paths["tmp"] / "none.safetensors", "empty": bad_paths["empty"],
            "json": digits_ckpt.with_suffix(".json"), "corrupt": bad_paths["corrupt"]}[which]
    extra = ["--eps", "0.5"] if command in ("certify", "attack") else []
    code, _, err = run([command, path, *extra], capsys)
    assert code == 1
    assert_one_error_line(err, *phrases)


def test_a_run_folder_stands_for_its_model_file(digits_run, tmp_path, capsys):
    out = tmp_path / "c.json"
    code, text, _ = run(["certify", digits_run, "--eps", "0.1", "--limit", "20", "--no-progress",
                         "--json", out], capsys)
    assert code == 0
    assert str(digits_run / "model.safetensors") in text
    assert f"wrote {out}" in text and out.stat().st_size > 0


@pytest.mark.parametrize("argv, phrases", [
    (["certify", "{ckpt}", "--data", "nope", "--eps", "1"], ["unknown data set 'nope'"]),
    (["certify", "{ckpt}", "--eps", "0.5", "-0.5"], ["--eps", "got -0.5"]),
    (["certify", "{ckpt}", "--eps", "nan"], ["--eps", "finite"]),
    (["attack", "{ckpt}", "--eps", "inf"], ["--eps", "finite"]),
    (["certify", "{ckpt}", "--eps", "1", "--limit", "0"], ["--limit must be >= 1"]),
    (["audit", "{ckpt}", "--batch-size", "0"], ["--batch-size must be >= 1"]),
    (["attack", "{ckpt}", "--eps", "1", "--steps", "0"], ["--steps must be >= 1"]),
    (["attack", "{ckpt}", "--eps", "1", "--restarts", "0"], ["--restarts must be >= 1"]),
    (["attack", "{ckpt}", "--eps", "1", "--norm", "inf", "--attack", "deepfool"],
     ["l2 attack", "--norm 2"]),
    (["certify", "{ckpt}", "--eps", "1", "--device", "tpu"], ["unknown --device 'tpu'"]),
    (["bound", "{ckpt}", "--device", "gpu"], ["unknown --device 'gpu'"]),
    (["bound", "{ckpt}", "--lower-starts", "0"], ["--lower-starts must be >= 1"]),
    (["bound", "{ckpt}", "--input-shape", "1", "0"], ["--input-shape", "positive"]),
    (["bound", "{ckpt}", "--input-shape", "1", "28", "28", "--lower-steps", "0"],
     ["does not take inputs of shape 1x28x28", "built for 1x8x8"]),
    (["certify", "{mnist}", "--data", "digits", "--eps", "1"],
     ["digits has images of shape 1x8x8", "takes 1x28x28", "trained on mnist-5k"]),
    (["audit", "{ckpt}", "--data", "mnist-5k"], ["shape 1x28x28", "takes 1x8x8"]),
    (["certify", "{ckpt}", "--eps", "1", "--plot", "{tmp}"], ["--plot", "is a folder"]),
    (["certify", "{ckpt}", "--eps", "1", "--plot", "{tmp}/c.txt"], [".png, .pdf or .svg"]),
    (["audit", "{ckpt}", "--plot", "{file}/h.png"], ["a-file.txt is a file"]),
    (["attack", "{ckpt}", "--eps", "1", "--json", "{file}/sub/r.json"], ["a-file.txt is a file"]),
    (["certify", "{ckpt}", "--eps", "1", "--json", "{tmp}"], ["--json", "is a folder"]),
    (["data", "show", "nope"], ["unknown data set"]),
    (["data", "show", "digits", "--samples", "0"], ["--samples must be >= 1"]),
    (["data", "show", "digits", "--plot", "{tmp}/grid.jpg"], [".png, .pdf or .svg"]),
    (["train", "--data", "digits", "--out", "{file}"], ["--out", "is a file, not a folder"]),
    (["train", "--data", "digits", "--device", "tpu", "--out", "{tmp}/run"],
     ["unknown --device"]),
    (["demo", "--epochs", "0", "--out", "{tmp}/demo"], ["--epochs must be >= 1"]),
])
def test_bad_arguments_fail_fast_with_one_line(argv, phrases, digits_ckpt, mnist_ckpt,
                                                bad_paths, capsys, monkeypatch):
    import lipcert.data

    def no_data(*args, **kwargs):  # every case must fail before any data set is loaded
        raise AssertionError("the command loaded data before checking its arguments")

    monkeypatch.setattr(lipcert.data, "load", no_data)
    values = {"ckpt": digits_ckpt, "mnist": mnist_ckpt, "tmp": bad_paths["tmp"],
              "file": bad_paths["file"]}
    code, _, err = run([a.format(**values) for a in argv], capsys)
    assert code == 1
    assert_one_error_line(err, *phrases)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["bound", "certify", "attack", "audit", "train"])
def test_cuda_without_a_gpu(command, digits_ckpt, tmp_path, capsys):
    argv = ([command, "--data", "digits", "--out", tmp_path / "run"] if command == "train"
            else [command, digits_ckpt] + (["--eps", "1"] if command in ("certify", "attack")
                                           else []))
    code, _, err = run([*argv, "--device", "cuda"], capsys)
    assert code == 1
    assert_one_error_line(err, "no CUDA GPU is available", "cpu")


@pytest.mark.parametrize("argv, phrase", [
    (["certify", "{ckpt}", "--eps", "abc"], "invalid float value: 'abc'"),
    (["attack", "{ckpt}", "--eps", "1", "--attack", "apgd"], "invalid choice: 'apgd'"),
    (["audit", "{ckpt}", "--split", "val"], "invalid choice: 'val'"),
    (["certify", "{ckpt}"], "--eps"),
    (["frobnicate"], "invalid choice"),
])
def test_malformed_arguments_are_usage_errors(argv, phrase, digits_ckpt, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(ckpt=digits_ckpt) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err.splitlines()[-1] and phrase in err and "Traceback" not in err


def test_os_errors_and_interrupts_end_in_one_line(digits_ckpt, capsys, monkeypatch):
    import lipcert.cli.bound_cmd as bound_cmd

    def unreadable(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bound_cmd, "load_checkpoint", unreadable)
    code, _, err = run(["bound", digits_ckpt], capsys)
    assert code == 1
    assert_one_error_line(err, "Permission denied", str(digits_ckpt))

    def interrupted(path, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bound_cmd, "load_checkpoint", interrupted)
    code, _, err = run(["bound", digits_ckpt], capsys)
    assert code == 130 and err.strip() == "lipcert: interrupted"


def test_error_text_drops_what_torch_fx_appends():
    err = ValueError("SLLLinear: expects 64 features.\n\nWhile executing %_6 : ...\n"
                     "Original traceback:\nNone")
    assert error_text(err) == "SLLLinear: expects 64 features."
