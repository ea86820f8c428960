"""Training features (#14): augmentation on tensors (crop with padding, flip), the validation
split, TensorBoard logging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipcert import data
from lipcert.errors import BadInputError
from lipcert.train import TrainConfig
from lipcert.train.augment import ImageAugment


def test_each_crop_is_a_window_of_the_padded_image_and_sizes_are_kept():
    x = torch.rand(16, 2, 6, 5)
    out = ImageAugment("crop:2", seed=0)(x, epoch=0, step=0)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # independent oracle: search every window
        windows = [padded[i, :, r:r + 6, c:c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)  # 16 draws: some crop moved


def test_flip_mirrors_about_half_the_samples_and_nothing_else():
    x = torch.rand(400, 1, 4, 4)
    out = ImageAugment("flip", seed=1)(x, epoch=0, step=0)
    mirrored = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x, strict=True)])
    assert bool((mirrored | kept).all())
    assert 150 < int(mirrored.sum()) < 250


def test_draws_depend_on_seed_epoch_and_step_only():
    x = torch.rand(8, 1, 8, 8)
    a = ImageAugment("crop,flip", seed=3)
    assert torch.equal(a(x, epoch=2, step=5), ImageAugment("crop,flip", seed=3)(x, epoch=2,
                                                                                  step=5))
    assert not torch.equal(a(x, epoch=2, step=5), a(x, epoch=2, step=6))


@pytest.mark.parametrize("spec", ["rotate", "crop:0", "crop:x", "flip:3", ""])
def test_bad_specs_are_errors(spec):
    with pytest.raises(BadInputError):
        ImageAugment(spec)


def test_flip_is_refused_for_digits_and_val_fraction_is_checked():
    with pytest.raises(BadInputError, match="mirrors digits"):
        TrainConfig(data="mnist-5k", augment="crop,flip").validate()
    with pytest.raises(BadInputError, match="val_fraction"):
        TrainConfig(val_fraction=1.5).validate()


def test_validation_split_is_stratified_disjoint_and_complete():
    train = data.load("digits", "train")
    kept, held = data.validation_split(train, 0.2)
    assert len(kept) + len(held) == len(train)
    counts = torch.bincount(train.tensors[1], minlength=10)
    assert torch.equal(torch.bincount(held.tensors[1], minlength=10),
                       torch.floor(counts * 0.2).long())
    rows = {tuple(r.flatten().tolist()) for r in held.tensors[0]}
    assert not rows & {tuple(r.flatten().tolist()) for r in kept.tensors[0]}
    assert held.tensors[1][:10].tolist() == list(range(10))  # round-robin prefix


def test_cli_train_with_augment_and_validation(tmp_path):
    import json

    from lipcert.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "sll-s", "--width", "4", "--depth", "1",
                 "--epochs", "1", "--batch-size", "256", "--no-progress", "--augment", "crop",
                 "--val-fraction", "0.25", "--out", str(out)]) == 0
    record = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert record["augment"] == "crop"


def test_tensorboard_logs_every_epoch_beside_the_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lipcert.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "sll-s", "--width", "4", "--depth", "1",
                 "--epochs", "2", "--batch-size", "256", "--no-progress", "--tensorboard",
                 "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("test_accuracy")]
    assert steps == [1, 2]
    assert (out / "log.jsonl").read_text().count("\n") == 2


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from lipcert.errors import MissingDependencyError
    from lipcert.train.tensorboard import open_writer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'lipcert\[tensorboard\]'"):
        open_writer(tmp_path)


def test_eval_every_skips_evaluation_between_and_keeps_the_last(monkeypatch):
    """#15: per-epoch evaluation (a pass over the test set, the network bound) is opt-in."""
    from lipcert import models
    from lipcert.losses import build_loss
    from lipcert.train import loop, train

    calls = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate",
                        lambda m, d, *a, **k: calls.append(len(d)) or real(m, d, *a, **k))
    train_data = torch.utils.data.Subset(data.load("digits", "train"), range(128))
    test_data = torch.utils.data.Subset(data.load("digits", "test"), range(64))
    model = models.build("sll-s", seed=0, image_size=8, width=4, depth=1, dense_width=16,
                         dense_depth=1)
    result = train(model, train_data, test_data, build_loss("margin-ce", eps=0.3), 5,
                   batch_size=64, progress=False, eval_every=2)
    assert calls.count(64) == 3  # full evaluations: epochs 2, 4 and the last (5)
    evaluated = [r["test_accuracy"] is not None for r in result.history]
    assert evaluated == [False, True, False, True, True]
    assert result.history[0]["lipschitz_upper"] is None
    with pytest.raises(BadInputError, match="eval_every"):
        train(model, train_data, test_data, build_loss("ce"), 1, eval_every=0)
