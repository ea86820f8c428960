"""lipcert.models.build: names, arguments, shapes, and the 1-Lipschitz claim of each recipe."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.func import jacrev

from lipcert.errors import BadInputError
from lipcert.layers import NormalizedLinear
from lipcert.models import RECIPES, build, default_args, describe

LIPSCHITZ_RECIPES = ("sll-s", "sll-m", "cpl-s", "aol-s", "spectral-s")
PLAIN_MODULES = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.AvgPool2d, nn.MaxPool2d,
                 nn.Identity)


def test_required_recipes_exist_and_describe_themselves():
    assert set(LIPSCHITZ_RECIPES) | {"lmt-mnist"} <= set(RECIPES)
    for name in RECIPES:
        line = describe(name)
        assert line.startswith(f"{name}: ") and "\n" not in line
        assert set(default_args(name)) >= {"in_channels", "image_size", "num_classes", "width",
                                           "depth"}
        assert default_args(name)["in_channels"] == 1
        assert default_args(name)["image_size"] == 28
        assert default_args(name)["num_classes"] == 10


def test_unknown_name_lists_the_choices():
    with pytest.raises(BadInputError) as info:
        build("sll-xl")
    assert all(name in str(info.value) for name in RECIPES)
    with pytest.raises(BadInputError):
        describe("sll-xl")


@pytest.mark.parametrize("name", RECIPES)
def test_unknown_argument_lists_the_accepted_ones(name):
    with pytest.raises(BadInputError, match="colour") as info:
        build(name, colour=3)
    assert all(key in str(info.value) for key in default_args(name))


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "16", None])
def test_bad_argument_values_are_refused(value):
    with pytest.raises(BadInputError, match="width must be a positive integer"):
        build("sll-s", width=value)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize(
    "shape", [(1, 28, 10), (3, 32, 7), (1, 8, 10)], ids=["mnist", "cifar", "digits"]
)
def test_every_recipe_builds_for_other_inputs(name, shape):
    in_channels, image_size, num_classes = shape
    # sll-m's first stage (8 channels) is narrower than the 12 the stem makes from RGB
    wider = {"width": 12} if name == "sll-m" and in_channels == 3 else {}
    torch.manual_seed(0)
    model = build(name, in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                  **wider)
    assert model.lipcert_spec == {
        "recipe": name,
        "args": {**default_args(name), "in_channels": in_channels, "image_size": image_size,
                 "num_classes": num_classes, **wider},
    }
    logits = model(torch.rand(4, in_channels, image_size, image_size))
    assert logits.shape == (4, num_classes) and bool(torch.isfinite(logits).all())


def test_recipe_arguments_change_the_model():
    small = build("sll-s", width=8, depth=1, dense_width=16, dense_depth=1)
    large = build("sll-s", width=16, depth=3, dense_width=32, dense_depth=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(large)
    assert small.lipcert_spec["args"]["depth"] == 1


def test_lmt_mnist_is_kolter_and_wong_cnn():
    model = build("lmt-mnist")
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU,
                     nn.Linear]
    for conv, (cin, cout) in zip((model[0], model[2]), ((1, 16), (16, 32)), strict=True):
        assert (conv.in_channels, conv.out_channels) == (cin, cout)
        assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert (model[5].in_features, model[5].out_features) == (32 * 7 * 7, 100)
    assert (model[7].in_features, model[7].out_features) == (100, 10)


@pytest.mark.parametrize(("name", "size"), [("lmt-mnist", 2), ("sll-s", 30), ("aol-s", 6)])
def test_unusable_image_sizes_are_refused(name, size):
    with pytest.raises(BadInputError, match="image_size"):
        build(name, image_size=size, depth=2)


def test_widths_that_do_not_fit_the_layers_are_refused():
    with pytest.raises(BadInputError, match="width"):
        build("sll-s", in_channels=3, width=8)
    for name in ("aol-s", "spectral-s"):
        with pytest.raises(BadInputError, match="even"):
            build(name, width=15)
        with pytest.raises(BadInputError, match="even"):
            build(name, dense_width=15)


def layer_bounds(model: nn.Sequential, x: torch.Tensor) -> list:
    """``lipschitz_bound`` of every module of ``model``, at the input shape it sees on ``x``."""
    shapes = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: shapes.append(args[0].shape))
             for m in model]
    model(x)
    for hook in hooks:
        hook.remove()
    return [(m, m.lipschitz_bound(s) if hasattr(m, "lipschitz_bound") else None)
            for m, s in zip(model, shapes, strict=True)]


def shaken(name: str, dtype: torch.dtype) -> nn.Sequential:
    """Digits-sized recipe model after a few SGD steps with a large learning rate, in eval mode."""
    torch.manual_seed(1)
    model = build(name, image_size=8, width=8, depth=2, dense_width=16).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        x = torch.rand(32, 1, 8, 8, dtype=dtype)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), torch.arange(32) % 10).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name", LIPSCHITZ_RECIPES)
def test_network_before_last_layer_is_one_lipschitz(name):
    """Each layer is boundable and reports a sound bound whose product is <= 1; independently,
    the spectral norm of the explicit Jacobian (float64) at random inputs, after training
    steps, never exceeds 1."""
    model = shaken(name, torch.float64)
    assert isinstance(model[-1], NormalizedLinear)
    product = 1.0
    for module, bound in layer_bounds(model, torch.rand(2, 1, 8, 8, dtype=torch.float64)):
        assert bound is not None or isinstance(module, PLAIN_MODULES), module
        if bound is not None and module is not model[-1]:
            assert bound.is_sound, module
            product *= float(bound)
    assert product <= 1 + 1e-6
    body = model[:-1]
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        x = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=generator)
        jacobian = jacrev(body)(x).reshape(-1, x.numel())
        assert float(torch.linalg.svdvals(jacobian.detach())[0]) <= 1 + 1e-6


@pytest.mark.default_threads
def test_sll_s_step_time_on_an_mnist_batch():
    """Default sll-s forward+backward on 128 MNIST-sized images. Printed: the demo needs it well
    under 0.1 s on 2 cores; asserted only against gross regressions (a Python loop over
    pixels), because on a shared machine the time depends on the load."""
    torch.manual_seed(0)
    model = build("sll-s")
    x = torch.rand(128, 1, 28, 28)
    y = torch.arange(128) % 10
    times = []
    for _ in range(5):
        start = time.perf_counter()
        nn.functional.cross_entropy(model(x), y).backward()
        times.append(time.perf_counter() - start)
    median = sorted(times[2:])[len(times[2:]) // 2]
    print(f"\nsll-s forward+backward, batch 128x1x28x28: median {median * 1000:.1f} ms "
          f"({torch.get_num_threads()} threads)")
    assert median < 10.0


def test_seed_makes_builds_reproducible_without_touching_the_global_generator():
    state = torch.random.get_rng_state()
    first, second = build("sll-s", seed=3), build("sll-s", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(build("sll-s", seed=4)[2].weight, first[2].weight)


def test_sll_m_downsamples_twice_and_pools_nothing():
    """sll-m: space-to-depth, a stage on 8 channels, space-to-depth, a stage on 32, and the
    dense blocks on all 32 * 7 * 7 features (no norm pooling)."""
    model = build("sll-m", depth=1, dense_width=16, dense_depth=1)
    kinds = [type(module).__name__ for module in model]
    assert kinds.count("InvertibleDownsample") == 2 and "L2NormPool2d" not in kinds
    assert [module.features for module in model if hasattr(module, "log_q")] == \
        [8, 32, 32 * 7 * 7]
    assert model[-1].in_features == 32 * 7 * 7
