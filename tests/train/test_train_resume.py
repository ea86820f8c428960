"""An interrupted and resumed run ends with bit-identical weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from train_helpers import digits, tiny_mlp

from lipcert.errors import CheckpointError
from lipcert.losses import MarginCrossEntropy
from lipcert.train import train


def run(out, *, init_seed=0, **kwargs):
    train_data, test_data = digits()
    model = tiny_mlp(init_seed, dropout=0.2)  # dropout: the RNG state must be restored too
    return train(
        model, train_data, test_data, MarginCrossEntropy(0.5, 0.5), 3, seed=7, batch_size=64,
        lr=0.01, certify=False, progress=False, out=out, **kwargs,
    )


def test_resume_after_interruption_gives_bit_identical_weights(tmp_path):
    full = run(tmp_path / "full")
    part = run(tmp_path / "cut", stop_after=1)
    assert part.epochs_done == 1
    # a differently initialized model: resuming must overwrite every weight
    resumed = run(tmp_path / "cut", init_seed=123, resume=True)
    assert resumed.epochs_done == 3
    for (name, a), (_, b) in zip(full.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    lines = (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_without_a_state_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run(tmp_path / "empty", resume=True)


def test_resume_with_a_different_model_fails_clearly(tmp_path):
    run(tmp_path / "run", stop_after=1)
    train_data, test_data = digits()
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(CheckpointError, match="does not match"):
        train(other, train_data, test_data, nn.CrossEntropyLoss(), 3, seed=7, batch_size=64,
              certify=False, progress=False, out=tmp_path / "run", resume=True)


def test_torn_checkpoint_is_detected(tmp_path):
    run(tmp_path / "run", stop_after=1)
    state = tmp_path / "run" / "train_state.json"
    payload = json.loads(state.read_text())
    payload["epoch"] = 2
    state.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="do not belong together"):
        run(tmp_path / "run", resume=True)


@pytest.mark.parametrize("change, listed", [
    ({"lr": 0.1}, "lr: 0.01 -> 0.1"),
    ({"epochs": 5}, "epochs: 3 -> 5"),
    ({"batch_size": 32}, "batch_size: 64 -> 32"),
])
def test_resume_with_changed_settings_lists_the_differences(tmp_path, change, listed):
    """#14: a resumed run used to keep the old lr silently while applying new epochs."""
    run(tmp_path / "run", stop_after=1)
    train_data, test_data = digits()
    settings = dict(seed=7, batch_size=64, lr=0.01, certify=False, progress=False)
    epochs = change.pop("epochs", 3)
    settings.update(change)
    with pytest.raises(CheckpointError, match="other settings") as caught:
        train(tiny_mlp(0, dropout=0.2), train_data, test_data, MarginCrossEntropy(0.5, 0.5),
              epochs, out=tmp_path / "run", resume=True, **settings)
    assert listed in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_cli_resume_with_another_recipe_is_one_line(tmp_path, capsys):
    from lipcert.cli import main

    argv = ["train", "--data", "digits", "--width", "4", "--depth", "1", "--epochs", "2",
            "--stop-after", "1", "--batch-size", "256", "--no-certify", "--no-progress",
            "--out", str(tmp_path / "run")]
    assert main([*argv, "--model", "sll-s"]) == 0
    capsys.readouterr()
    assert main([*argv, "--model", "cpl-s", "--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'sll-s'" in err and "'cpl-s'" in err and "does not match" in err


def test_schedulefree_run_resumes_bit_identically_and_ends_on_its_averaged_weights(tmp_path):
    """Schedule-free AdamW (arXiv 2405.15682) holds two weight sequences: the loop switches
    it to eval mode before each evaluation and checkpoint and back to train mode before each
    epoch, so the returned model holds the averaged weights and a resumed run matches."""
    pytest.importorskip("schedulefree")
    settings = dict(optimizer="schedulefree", schedule="constant")
    full = run(tmp_path / "full", **settings)
    run(tmp_path / "cut", stop_after=1, **settings)
    resumed = run(tmp_path / "cut", init_seed=123, resume=True, **settings)
    for (name, a), (_, b) in zip(full.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    # the evaluated, saved and returned weights are the averaged ones: the model's test
    # accuracy now is the one logged for the last epoch
    from lipcert.train import evaluate

    _, test_data = digits()
    assert evaluate(full.model, test_data, [0.0], certify=False)["accuracy"] == \
        full.history[-1]["test_accuracy"]


def test_an_oversized_training_state_json_is_refused_before_parsing(tmp_path, monkeypatch):
    from lipcert.errors import CheckpointError
    from lipcert.train import checkpointing

    state = tmp_path / checkpointing.STATE_JSON
    state.write_text('{"epoch": 3, "pad": "' + "x" * 2000 + '"}')
    assert checkpointing.saved_epoch(tmp_path) == 3
    monkeypatch.setattr(checkpointing, "MAX_STATE_JSON_BYTES", 1000)
    with pytest.raises(CheckpointError, match="more than a lipcert training state"):
        checkpointing.saved_epoch(tmp_path)
