"""Progress: a live bar on a terminal, one line per bar (per epoch) in logs and pipes (#14)."""

from __future__ import annotations

import sys

import pytest
import torch
from tqdm.auto import tqdm

from lipcert import progress
from lipcert.progress import progress_bar


def test_piped_bar_prints_one_summary_line(capsys):
    assert not progress.is_interactive()  # pytest captures standard error
    items = list(progress_bar(range(5), desc="certify", unit="batch"))
    assert items == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert err.startswith("certify: 5/5 batch in ")


def test_manual_updates_and_postfix_are_summarized(capsys):
    with progress_bar(total=10, desc="audit", unit="point") as bar:
        bar.update(4)
        bar.update(6)
        bar.set_postfix(loss="0.1234", acc="0.9")
    err = capsys.readouterr().err
    assert "audit: 10/10 point" in err and "loss=0.1234, acc=0.9" in err


def test_disabled_prints_nothing(capsys):
    for _ in progress_bar(range(3), desc="x", unit="it", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress_bar(total=3, desc="live", unit="it")
    assert isinstance(bar, tqdm)
    bar.close()


@pytest.mark.parametrize("epochs", [2])
def test_training_logs_one_line_per_epoch_when_piped(epochs, capsys):
    from lipcert import data, models
    from lipcert.losses import build_loss
    from lipcert.train import train

    train_data = torch.utils.data.Subset(data.load("digits", "train"), range(128))
    test_data = torch.utils.data.Subset(data.load("digits", "test"), range(64))
    model = models.build("sll-s", seed=0, image_size=8, width=4, depth=1, dense_width=16,
                         dense_depth=1)
    train(model, train_data, test_data, build_loss("margin-ce", eps=0.3), epochs,
          batch_size=32, eps=0.3, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("test_acc=" in line for line in lines)
