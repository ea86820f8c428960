"""Gaussian noise augmentation for smoothing (lipcert.train.noise_augment, train(noise=...)).

Lives under tests/certify with the other smoothing tests; it exercises lipcert.train."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats
from torch import nn

from lipcert import data
from lipcert.errors import BadInputError
from lipcert.losses import MarginCrossEntropy
from lipcert.train import TrainConfig, train
from lipcert.train.noise_augment import NoiseAugment, make_noise_augment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import digits  # noqa: E402


class Recorder(nn.Module):
    """Wraps a model and keeps every training input it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.model(x)


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).double()


def run(out=None, *, noise="gaussian:0.25", record=False, **kwargs):
    train_data, test_data = digits()
    train_data = torch.utils.data.TensorDataset(train_data.tensors[0][:256].double(),
                                                train_data.tensors[1][:256])
    test_data = torch.utils.data.TensorDataset(test_data.tensors[0][:64].double(),
                                               test_data.tensors[1][:64])
    model = Recorder(tiny()) if record else tiny()
    return train(model, train_data, test_data, MarginCrossEntropy(0.5, 0.5), 3, seed=7,
                 batch_size=64, lr=0.01, certify=False, progress=False, out=out, noise=noise,
                 **kwargs), train_data


def test_noise_is_fresh_per_sample_and_step_with_the_stated_law():
    (result, train_data) = run(record=True)
    seen = result.model.seen
    assert len(seen) == 3 * 4
    clean = train_data.tensors[0]
    # Recover the noise by matching each seen input to its clean image (nearest neighbour).
    noises = []
    for x in seen:
        d = torch.cdist(x.flatten(1), clean.flatten(1))
        noises.append(x.flatten(1) - clean.flatten(1)[d.argmin(1)])
    z = torch.cat(noises).flatten().numpy()
    assert stats.kstest(z, stats.norm(scale=0.25).cdf).pvalue > 1e-3
    assert abs(z.std() - 0.25) < 0.01
    # Fresh: no two steps (nor two samples) share noise.
    assert not torch.equal(noises[0][0], noises[0][1])
    assert not torch.equal(noises[0][:5], noises[4][:5])


def test_noise_augment_is_seeded_and_keyed_by_epoch_and_step():
    aug = NoiseAugment("laplace:0.5", seed=3)
    x = torch.zeros(4, 8)
    a = aug(x, epoch=1, step=2)
    assert torch.equal(a, NoiseAugment("laplace:0.5", seed=3)(x, epoch=1, step=2))
    assert not torch.equal(a, aug(x, epoch=1, step=3))
    assert not torch.equal(a, aug(x, epoch=2, step=2))
    assert not torch.equal(a, NoiseAugment("laplace:0.5", seed=4)(x, epoch=1, step=2))
    assert not torch.equal(a, NoiseAugment("laplace:0.5", seed=3, rank=1)(x, epoch=1, step=2))
    assert make_noise_augment(None, 0) is None


def test_resume_with_noise_is_bit_identical(tmp_path):
    full, _ = run(tmp_path / "full")
    run(tmp_path / "cut", stop_after=1)
    resumed, _ = run(tmp_path / "cut", resume=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    clean, _ = run(tmp_path / "clean", noise=None)
    assert not torch.equal(clean.model[1].weight, full.model[1].weight)


@pytest.mark.parametrize("bad", ["gaussian", "gaussian:-1", "cauchy:0.1", 0.25])
def test_bad_noise_fails_before_training(bad):
    with pytest.raises(BadInputError):
        run(noise=bad)
    with pytest.raises(BadInputError):
        TrainConfig.from_dict({"noise": bad, "data": "digits", "model": "lmt-mnist"})


def test_config_and_cli_take_noise(tmp_path):
    from lipcert.cli import build_parser, main

    args = build_parser().parse_args(["train", "--noise", "gaussian:0.5", "--data", "digits"])
    assert args.noise == "gaussian:0.5"
    assert TrainConfig.from_dict({"noise": "gaussian:0.5"}).noise == "gaussian:0.5"
    assert main(["train", "--noise", "gaussian:zero", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 1
    assert math.isclose(NoiseAugment("uniform:0.2").sigma, 0.2)
    assert data.info("digits") is not None
