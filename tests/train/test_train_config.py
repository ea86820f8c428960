"""Bad settings fail before the first training step, with a message that says what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from train_helpers import digits, tiny_mlp

from lipcert.cli import main
from lipcert.errors import LipcertError
from lipcert.train import TrainConfig, train, train_from_config


def no_step_loss(logits, target):
    raise AssertionError("training started despite a bad setting")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "resnet-9000"}, "unknown model recipe"),
        ({"eps": -0.5}, "eps"),
        ({"epochs": 0}, "epochs"),
        ({"loss": "focal"}, "unknown loss"),
        ({"data": "imagenet"}, "unknown data set"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "zigzag"}, "unknown schedule"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_config_fails_before_training(tmp_path, settings, message):
    with pytest.raises(LipcertError, match=message):
        train_from_config(TrainConfig(out=str(tmp_path / "run"), **settings))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)), {}, "does not accept images"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), {}, "only 5 outputs"),
        (tiny_mlp(), {"epochs": 0}, "epochs"),
        (tiny_mlp(), {"eps": -1.0}, "eps"),
        (tiny_mlp(), {"eps": float("nan")}, "eps"),
        (tiny_mlp(), {"resume": True}, "nothing to resume"),
    ],
)
def test_bad_training_call_fails_before_training(tmp_path, model, kwargs, message):
    train_data, test_data = digits()
    settings = {"epochs": 2, "certify": False, "progress": False, "out": tmp_path / "run"}
    settings.update(kwargs)
    with pytest.raises(LipcertError, match=message):
        train(model, train_data, test_data, no_step_loss, **settings)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_toml_config_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nmodel = "cpl-s"\ndata = "digits"\nbatch-size = 32\neps = 0.5\n')
    config = TrainConfig.from_toml(path, eps=0.25)
    assert (config.model, config.data, config.batch_size, config.eps) == ("cpl-s", "digits",
                                                                         32, 0.25)
    path.write_text('model = "sll-s"\nlearning_rate = 0.1\n')
    with pytest.raises(LipcertError, match="unknown setting"):
        TrainConfig.from_toml(path)


def test_cli_reports_bad_settings_without_a_traceback(tmp_path, capsys):
    code = main(["train", "--model", "nope", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "unknown model recipe" in capsys.readouterr().err
    code = main(["train", "--epochs", "0", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "epochs" in capsys.readouterr().err


def test_unknown_device_is_refused():
    train_data, test_data = digits()
    with pytest.raises(LipcertError, match="unknown device 'tpu'"):
        train(tiny_mlp(), train_data, test_data, no_step_loss, 1, device="tpu",
              certify=False, progress=False)


def test_cuda_request_without_gpu_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    train_data, test_data = digits()
    with pytest.raises(LipcertError, match="no CUDA"):
        train(tiny_mlp(), train_data, test_data, no_step_loss, 1, device="cuda",
              certify=False, progress=False)
