"""Per-channel input normalization inside the model (``normalize="channels"``, ``--normalize``):
fitted on the training images only, saved with the weights, and certified in input units."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import digits

from lipcert import models
from lipcert.bounds import Normalize, lipschitz_bound
from lipcert.certify import lipschitz_radii
from lipcert.errors import BadInputError
from lipcert.train import TrainConfig
from lipcert.train.run import train_from_config

SMALL = dict(image_size=8, width=4, depth=1, dense_width=16, dense_depth=1)


def test_fit_sets_the_channel_statistics_and_refuses_what_it_cannot_fit():
    model = models.build("sll-s", normalize="channels", in_channels=3, **{**SMALL, "width": 12})
    images = torch.rand(50, 3, 8, 8) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    layer = models.fit_input_normalization(model, images)
    flat = images.double().transpose(0, 1).reshape(3, -1)
    assert torch.allclose(layer.mean.double(), flat.mean(1), atol=1e-6)
    assert torch.allclose(layer.std.double(), flat.std(1, correction=0), atol=1e-6)
    with pytest.raises(BadInputError, match="constant"):
        models.fit_input_normalization(model, torch.ones(4, 3, 8, 8))
    with pytest.raises(BadInputError, match=r"\(N, 3"):
        models.fit_input_normalization(model, torch.rand(4, 1, 8, 8))
    with pytest.raises(BadInputError, match="no input normalization"):
        models.fit_input_normalization(models.build("sll-s", **SMALL), images[:, :1])
    with pytest.raises(BadInputError, match="normalize must be one of"):
        models.build("sll-s", normalize="yes")
    assert "normalize" not in models.build("sll-s", **SMALL).lipcert_spec["args"]


def test_training_with_normalize_fits_the_training_part_and_certifies_in_input_units(tmp_path):
    train_data, test_data = digits()
    config = TrainConfig(model="sll-s", data="digits", epochs=1, batch_size=256, width=4,
                         depth=1, normalize=True, val_fraction=0.25, progress=False,
                         out=str(tmp_path / "run"))
    result = train_from_config(config)
    model = result.model.eval()
    assert isinstance(model[0], Normalize)
    from lipcert.data import validation_split

    kept, _ = validation_split(train_data, 0.25)
    assert float(model[0].mean) == pytest.approx(float(kept.tensors[0].double().mean()), 1e-6)
    # saved with the weights, rebuilt by models.load
    loaded = models.load(tmp_path / "run")
    x, y = test_data.tensors[0][:16], test_data.tensors[1][:16]
    assert torch.equal(loaded(x), model(x))
    # the bound covers the normalization: it is at least the Jacobian's norm at test points
    bound = lipschitz_bound(loaded, x)
    for point in x[:4]:
        jacobian = torch.func.jacrev(lambda v: loaded(v[None])[0])(point).reshape(10, -1)
        norm = float(torch.linalg.matrix_norm(jacobian.detach().double(), ord=2))
        assert norm <= float(bound) * (1 + 1e-5)
    assert float(bound) >= 1 / float(loaded[0].std) - 1e-6  # the stem alone is an isometry
    radii = lipschitz_radii(loaded, x, y)  # raw images in [0, 1] are accepted
    assert bool((radii >= 0).all())
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        lipschitz_radii(loaded, x * 255, y)


def test_cli_train_normalize_then_certify(tmp_path, capsys):
    from lipcert.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "sll-s", "--width", "4", "--depth", "1",
                 "--epochs", "1", "--batch-size", "256", "--no-progress", "--normalize",
                 "--out", str(out)]) == 0
    assert models.read_spec(out / "model.safetensors")["args"]["normalize"] == "channels"
    result = tmp_path / "cert.json"
    assert main(["certify", str(out), "--eps", "0.1", "--limit", "32", "--no-progress",
                 "--json", str(result)]) == 0
    assert json.loads(result.read_text())["points"] == 32


def test_normalize_fits_a_dataset_that_is_not_a_tensor_dataset(tmp_path):
    train_data, test_data = digits()
    subset = torch.utils.data.Subset(train_data, range(0, 600, 2))
    config = TrainConfig(model="sll-s", data="digits", epochs=1, batch_size=256, width=4,
                         depth=1, normalize=True, certify=False, progress=False,
                         out=str(tmp_path / "run"))
    model = train_from_config(config, subset, test_data).model
    expected = train_data.tensors[0][0:600:2].double().std(correction=0)
    assert float(model[0].std) == pytest.approx(float(expected), rel=1e-6)
