"""Training a recipe model improves certification; the log, checkpoint and CLI work."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import digits

from lipcert import models
from lipcert.cli import main
from lipcert.losses import build_loss
from lipcert.train import TrainConfig, evaluate, train, train_from_config

SMALL = dict(image_size=8, width=8, depth=1, dense_width=32, dense_depth=1)


def test_short_training_improves_certified_accuracy_and_writes_a_checkpoint(tmp_path):
    train_data, test_data = digits()
    torch.manual_seed(0)
    model = models.build("sll-s", **SMALL)
    before = evaluate(model, test_data, [0.3])
    result = train(model, train_data, test_data, build_loss("margin-ce", eps=0.3), 2,
                   seed=0, batch_size=64, eps=0.3, out=tmp_path, progress=False,
                   dataset_name="digits")
    after = result.history[-1]
    assert after["certified_accuracy"] >= before["certified"]["0.3"] + 0.05
    assert after["test_accuracy"] > 0.3
    # the logged certified accuracy is what an independent re-evaluation finds
    reloaded = models.load(result.model_file)
    again = evaluate(reloaded, test_data, [0.3])
    assert again["certified"]["0.3"] == pytest.approx(after["certified_accuracy"])
    assert again["lipschitz"] == pytest.approx(after["lipschitz_upper"], rel=1e-6)
    assert models.read_spec(result.model_file)["extra"]["epoch"] == 2
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]


def test_certified_accuracy_never_exceeds_clean_accuracy():
    train_data, test_data = digits()
    torch.manual_seed(1)
    model = models.build("aol-s", **SMALL)
    result = train(model, train_data, test_data, build_loss("margin-ce", eps=0.1), 1,
                   seed=1, batch_size=64, eps=0.1, progress=False)
    record = result.history[-1]
    assert 0 <= record["certified_accuracy"] <= record["test_accuracy"]
    assert record["lipschitz_upper"] > 0


def test_lmt_plus_plus_trains_an_unconstrained_network():
    train_data, test_data = digits()
    torch.manual_seed(0)
    model = models.build("lmt-mnist", **SMALL)
    loss = build_loss("lmt++", eps=0.2, ramp_epochs=2)
    result = train(model, train_data, test_data, loss, 2, seed=0, batch_size=64, eps=0.2,
                   lr=0.003, progress=False)
    assert loss.eps == pytest.approx(0.2)  # the ramp reached its target
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.history[-1]["test_accuracy"] > 0.2


def test_cli_train_with_toml_config(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        '[train]\nmodel = "sll-s"\ndata = "digits"\nloss = "hinge"\neps = 0.3\n'
        f'epochs = 1\nbatch-size = 64\nwidth = 8\ndepth = 1\nout = "{tmp_path / "run"}"\n'
    )
    assert main(["train", "--config", str(config), "--no-progress", "--seed", "2"]) == 0
    output = capsys.readouterr().out
    assert "certified accuracy at eps=0.3" in output
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert models.read_spec(tmp_path / "run" / "model.safetensors")["dataset"] == "digits"
    assert TrainConfig.from_toml(config).loss == "hinge"


def test_train_from_config_matches_the_function_call(tmp_path):
    config = TrainConfig(model="sll-s", data="digits", epochs=1, batch_size=64, width=8,
                         depth=1, out=str(tmp_path / "a"), progress=False, eps=0.3)
    first = train_from_config(config)
    second = train_from_config(TrainConfig(**{**config.to_dict(), "out": str(tmp_path / "b")}))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_demo_quick_prints_bracket_and_table(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    output = capsys.readouterr().out
    assert "Lipschitz constant bracket" in output
    for radius in ("0.5", "1.58"):
        assert radius in output
    assert (tmp_path / "demo" / "certified_accuracy.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    lower, upper = summary["lipschitz_bracket"]
    assert 0 < lower <= upper * (1 + 1e-6)


def test_lipschitz_penalty_lowers_the_layer_norm_product():
    from train_helpers import tiny_mlp

    from lipcert.losses import lipschitz_penalty

    train_data, test_data = digits()
    x = train_data.tensors[0][:1]
    products = []
    for weight in (0.0, 0.5):
        model = tiny_mlp(0)
        train(model, train_data, test_data, torch.nn.CrossEntropyLoss(), 1, seed=0,
              batch_size=64, certify=False, progress=False, penalty=weight)
        products.append(float(lipschitz_penalty(model, x).detach()))
    assert products[1] < 0.8 * products[0]


def test_eps_comes_from_the_loss_when_not_given(tmp_path):
    """#14: train(loss=build_loss('margin-ce', eps=0.5)) used to log and certify at 1.0."""
    train_data, test_data = digits()
    model = models.build("sll-s", seed=0, **SMALL)
    result = train(model, train_data, test_data, build_loss("margin-ce", eps=0.5), 1,
                   batch_size=256, progress=False)
    assert result.history[-1]["eps"] == 0.5
    again = evaluate(model, test_data, [0.5])
    assert result.history[-1]["certified_accuracy"] == pytest.approx(again["certified"]["0.5"])


def test_two_different_radii_are_an_error():
    from lipcert.errors import BadInputError

    train_data, test_data = digits()
    model = models.build("sll-s", seed=0, **SMALL)
    with pytest.raises(BadInputError, match="eps=1 differs from the eps=0.5"):
        train(model, train_data, test_data, build_loss("margin-ce", eps=0.5), 1, eps=1.0,
              progress=False)
