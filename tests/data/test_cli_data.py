"""`lipcert --version`, `lipcert data list`, `lipcert data show`."""

import pytest

import lipcert
from lipcert.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert lipcert.__version__ in capsys.readouterr().out


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist-5k" in out and "4000 / 1000" in out and "cifar10" in out


def test_data_show_writes_png(tmp_path, capsys):
    out_png = tmp_path / "grid.png"
    assert main(["data", "show", "digits", "--split", "test", "--out", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "355 images" in text
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_show_unknown_name_is_a_clear_error(capsys):
    assert main(["data", "show", "imagenet"]) == 1
    assert "unknown data set 'imagenet'" in capsys.readouterr().err
