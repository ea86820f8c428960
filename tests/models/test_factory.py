"""A user's own nn.Module from --factory module:function plus a weights file (#14)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from lipcert.cli import main
from lipcert.errors import BadInputError, CheckpointError
from lipcert.models.factory import build_from_factory, load_weights, save_weights

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    def small(width=16):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    not_a_model = 3
''')


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models:small"


def test_weights_round_trip_and_cli_certify_matches_python(factory_module, tmp_path, capsys):
    from lipcert import certify, data

    torch.manual_seed(0)
    model = build_from_factory(factory_module, {"width": 8})
    path = save_weights(model, tmp_path / "mine.safetensors", factory=factory_module)
    again = load_weights(build_from_factory(factory_module, {"width": 8}), path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out = tmp_path / "c.json"
    assert main(["certify", str(path), "--factory", factory_module, "--factory-args",
                 '{"width": 8}', "--data", "digits", "--limit", "32", "--eps", "0.1",
                 "--no-progress", "--json", str(out)]) == 0
    x, y = data.load("digits", "test")[:32]
    radii = certify.lipschitz_radii(again.eval(), x, y)
    expected = certify.certified_accuracy(radii, [0.1])[0.1]
    assert json.loads(out.read_text())["certified_accuracy"][0]["accuracy"] == expected


def test_bound_of_a_factory_model_needs_only_the_input_shape(factory_module, tmp_path, capsys):
    path = save_weights(build_from_factory(factory_module), tmp_path / "w.safetensors")
    assert main(["bound", str(path), "--factory", factory_module, "--input-shape", "1", "8",
                 "8", "--lower-steps", "5"]) == 0
    assert "upper" in capsys.readouterr().out


def test_weights_that_do_not_fit_name_the_tensors(factory_module, tmp_path):
    path = save_weights(build_from_factory(factory_module, {"width": 8}), tmp_path / "w.st")
    wrong = r"other shapes for .*1\.weight \(\(8, 64\) vs \(16, 64\)\)"
    with pytest.raises(CheckpointError, match=wrong):
        load_weights(build_from_factory(factory_module, {"width": 16}), path)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_weights(nn.Sequential(nn.Linear(64, 10)), path)


@pytest.mark.parametrize("target, message", [
    ("user_models", "package.module:function"),
    ("no_such_module_xyz:f", "cannot import"),
    ("user_models:missing", "has no missing"),
    ("user_models:not_a_model", "not callable"),
])
def test_bad_factories_are_one_line_errors(factory_module, target, message):
    with pytest.raises(BadInputError, match=message):
        build_from_factory(target)


def test_factory_args_must_be_a_json_object_and_fit(factory_module, tmp_path, capsys):
    path = save_weights(build_from_factory(factory_module), tmp_path / "w.safetensors")
    base = ["certify", str(path), "--factory", factory_module, "--data", "digits", "--eps",
            "0.1", "--no-progress"]
    assert main([*base, "--factory-args", "[1, 2]"]) == 1
    assert "JSON object" in capsys.readouterr().err
    assert main([*base, "--factory-args", '{"depth": 3}']) == 1
    assert "depth" in capsys.readouterr().err


def test_the_factory_is_never_taken_from_the_file(factory_module, tmp_path, capsys):
    """The weights' metadata names the factory for people; without --factory nothing is
    imported (there is no spec to build from)."""
    path = save_weights(build_from_factory(factory_module), tmp_path / "w.safetensors",
                        factory=factory_module)
    assert main(["certify", str(path), "--data", "digits", "--eps", "0.1"]) == 1
    assert "lipcert: error" in capsys.readouterr().err


def test_cli_train_then_certify_a_factory_model(factory_module, tmp_path, capsys):
    """train --factory writes the weights; certify --factory reads them back."""
    out = tmp_path / "run"
    assert main(["train", "--factory", factory_module, "--factory-args", '{"width": 8}',
                 "--data", "digits", "--loss", "ce", "--epochs", "1", "--batch-size", "256",
                 "--no-certify", "--no-progress", "--out", str(out)]) == 0
    weights = out / "model.safetensors"
    model = load_weights(build_from_factory(factory_module, {"width": 8}), weights)
    assert isinstance(model, nn.Sequential)
    assert main(["certify", str(out), "--factory", factory_module, "--factory-args",
                 '{"width": 8}', "--data", "digits", "--eps", "0.1", "--limit", "16",
                 "--no-progress"]) == 0
