"""Output files (#14): never replace anything but a regular file, `-` is standard output,
the umask is honoured, and `--json` means the same in every command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading

import pytest
import torch

from lipcert.cli import main
from lipcert.report import OutputError, messages_to_stderr, new_figure, save_figure, write_json

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_honour_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask_022):
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o640)
    write_json(path, {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert json.loads(path.read_text()) == {"a": 2}


def test_checkpoints_honour_the_umask(tmp_path, umask_022):
    from lipcert import models

    path = tmp_path / "m.safetensors"
    models.save(models.build("sll-s", image_size=8, width=4, depth=1, dense_width=8,
                             dense_depth=1), path)
    for written in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_json(link, {"b": 3})
    assert link.is_symlink()
    assert json.loads(target.read_text()) == {"b": 3}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_device_is_an_error_and_stays_a_device():
    with pytest.raises(OutputError, match="No space left"):
        write_json("/dev/full", {"a": 1})
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_json(fifo, {"c": 4})
    reader.join(timeout=10)
    assert json.loads(received[0]) == {"c": 4}
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_dash_is_standard_output_and_messages_go_to_stderr(capsys):
    with messages_to_stderr():
        print("a message")
        write_json("-", {"d": 5})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"d": 5}
    assert "a message" in err


def test_a_figure_to_dash_is_a_png_on_standard_output(capsysbinary):
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, "-")
    assert capsysbinary.readouterr().out.startswith(PNG)
    assert not os.path.exists("-")


@pytest.mark.parametrize("command", [["bound", "--lower-steps", "0"],
                                     ["certify", "--limit", "8", "--no-progress", "--eps", "0.1"]])
@pytest.mark.parametrize("form", [["--json"], ["--json", "-"]])
def test_json_on_stdout_is_the_only_thing_on_stdout(command, form, digits_ckpt, capsys,
                                                    tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [command[0], str(digits_ckpt), *command[1:], *form]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    payload = json.loads(out)  # nothing but the JSON
    assert "checkpoint" in payload
    assert not (tmp_path / "-").exists()


def test_bound_json_to_a_file_also_prints_the_table(digits_ckpt, capsys, tmp_path):
    path = tmp_path / "bound.json"
    assert main(["bound", str(digits_ckpt), "--lower-steps", "0", "--json", str(path)]) == 0
    assert "lower_bound" in json.loads(path.read_text())
    assert "guarantee" in capsys.readouterr().out


def test_piped_json_parses_in_a_real_process(digits_ckpt):
    result = subprocess.run(
        [sys.executable, "-m", "lipcert", "bound", str(digits_ckpt), "--lower-steps", "0",
         "--json"], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(result.stdout)["checkpoint"]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_flag_and_variable_set_torch_threads(restore_threads, monkeypatch, capsys):
    torch.set_num_threads(2)
    assert main(["data", "list", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("LIPCERT_THREADS", "2")
    assert main(["data", "list"]) == 0
    assert torch.get_num_threads() == 2
    assert main(["data", "list", "--threads", "1"]) == 0  # the flag wins
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("argv, env, message", [
    (["data", "list", "--threads", "0"], None, "--threads must be >= 1"),
    (["data", "list"], "two", "LIPCERT_THREADS must be an integer"),
])
def test_bad_thread_counts_are_one_line_errors(argv, env, message, monkeypatch, capsys,
                                               restore_threads):
    if env is not None:
        monkeypatch.setenv("LIPCERT_THREADS", env)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_every_command_takes_threads_and_table():
    from lipcert.cli import _leaf_parsers, build_parser

    leaves = _leaf_parsers(build_parser())
    assert len(leaves) >= 7  # data list, data show, train, demo, attack, audit, bound, certify
    for parser in leaves:
        text = parser.format_help()
        assert "--threads N" in text and "--table" in text, parser.prog


@pytest.mark.parametrize("style, check", [
    ("md", lambda out: "| eps | certified accuracy |" in out and "|---|---|" in out),
    ("csv", lambda out: "eps,certified accuracy" in out and "\n0.1," in out),
    ("latex", lambda out: r"\begin{tabular}{ll}" in out and r"0.1 & " in out),
])
def test_tables_to_paste_into_a_paper(style, check, digits_ckpt, capsys):
    assert main(["certify", str(digits_ckpt), "--limit", "8", "--no-progress", "--eps", "0.1",
                 "--table", style]) == 0
    assert check(capsys.readouterr().out)


def test_results_json_records_the_run_and_reproduces_bit_for_bit(digits_ckpt, tmp_path,
                                                                  restore_threads):
    payloads = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        assert main(["attack", str(digits_ckpt), "--limit", "16", "--no-progress", "--eps",
                     "0.3", "--seed", "3", "--threads", "1", "--json", str(path)]) == 0
        payloads.append(json.loads(path.read_text()))
    run = payloads[0].pop("run")
    payloads[1].pop("run")
    assert payloads[0] == payloads[1]
    assert run["threads"] == 1 and run["command"] == "attack"
    assert run["arguments"]["seed"] == 3 and run["arguments"]["limit"] == 16
    assert run["arguments"]["split"] == "test" and run["arguments"]["data_name"] == "digits"
    assert run["lipcert"] and run["torch"] == torch.__version__


@pytest.mark.parametrize("command", [["bound", "--lower-steps", "0"],
                                     ["certify", "--limit", "16", "--eps", "0.1"]])
def test_dtype_float64_runs_the_model_in_float64(command, digits_ckpt, tmp_path, monkeypatch):
    """#14: the README's advice to certify in float64 had no flag."""
    seen = []
    real = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        seen.extend(a for a in args if isinstance(a, torch.dtype))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    path = tmp_path / "out.json"
    assert main([command[0], str(digits_ckpt), *command[1:], "--dtype", "float64", "--json",
                 str(path)]) == 0
    assert torch.float64 in seen
    assert json.loads(path.read_text())["run"]["arguments"]["dtype"] == "float64"
