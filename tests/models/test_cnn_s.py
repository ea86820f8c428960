"""The cnn-s recipe: plain CNN, optional NoiseInjection at the input, checkpoint round trip."""

from __future__ import annotations

import torch
from torch import nn

from lipcert.layers import NoiseInjection
from lipcert.models import build, load, save


def test_cnn_s_layout_and_noise_slot(tmp_path):
    plain = build("cnn-s", seed=0)
    noisy = build("cnn-s", seed=0, noise="gaussian:0.25")
    assert isinstance(plain[0], nn.Identity) and isinstance(noisy[0], NoiseInjection)
    assert noisy[0].sigma == 0.25 and noisy[0].law == "gaussian"
    assert plain.state_dict().keys() == noisy.state_dict().keys()
    convs = [m for m in plain if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    x = torch.rand(2, 1, 28, 28)
    with noisy[0].noise_free():
        torch.testing.assert_close(noisy(x), plain(x))
    assert not torch.equal(noisy(x), noisy(x))  # fresh noise in eval mode too
    save(noisy, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert isinstance(loaded[0], NoiseInjection) and loaded[0].sigma == 0.25
    with loaded[0].noise_free(), noisy[0].noise_free():
        torch.testing.assert_close(loaded(x), noisy(x))
