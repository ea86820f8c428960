import math

import pytest
import torch
from attack_oracles import box_points, linear_distance, linear_model, mlp, points
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipcert.attacks import pgd
from lipcert.errors import BadInputError

INF = float("inf")


def misclassified(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("norm, dual", [(2, 2), (INF, 1)])
def test_pgd_succeeds_just_above_the_exact_distance_and_fails_below(norm, dual):
    model = linear_model(12, 2, seed=0)
    x = points(40, 12, seed=1)
    y = model(x).argmax(1)
    distance = linear_distance(model, x, y, dual=dual)
    eps = 1.01 * distance
    # from x the default steps go straight to the optimum; from a random start near the
    # sphere, rotating towards it takes a longer total path than the default 2.5 eps
    above = pgd(model, x, y, eps, norm=norm, steps=30, clip=None, random_start=False)
    random_above = pgd(model, x, y, eps, norm, steps=30, step_size=eps / 4, clip=None, seed=0)
    below = pgd(model, x, y, 0.99 * distance, norm=norm, steps=30, restarts=3, clip=None, seed=0)
    assert misclassified(model, above, y).all()
    assert misclassified(model, random_above, y).all()
    assert not misclassified(model, below, y).any()


def test_targeted_pgd_reaches_the_nearest_class_just_beyond_the_multiclass_distance():
    model = linear_model(10, 5, seed=2)
    x = points(30, 10, seed=3)
    y = model(x).argmax(1)
    with torch.no_grad():
        z = model(x)
        lengths = (model.weight[y][:, None, :] - model.weight[None, :, :]).norm(dim=2)
        ratios = (z.gather(1, y[:, None]) - z) / lengths
        ratios[torch.arange(len(y)), y] = math.inf
        distance, nearest = ratios.min(dim=1)
    x_adv = pgd(
        model, x, nearest, 1.01 * distance, steps=30, targeted=True, clip=None, random_start=False
    )
    assert (model(x_adv).argmax(1) == nearest).all()
    untargeted = pgd(model, x, y, 0.99 * distance, steps=30, clip=None, seed=0)
    assert not misclassified(model, untargeted, y).any()


@settings(max_examples=15, deadline=None)
@given(
    eps=st.floats(0.0, 2.0),
    norm=st.sampled_from([2.0, INF]),
    loss=st.sampled_from(["margin", "ce"]),
    seed=st.integers(0, 100),
)
def test_pgd_stays_in_the_ball_and_the_data_range(eps, norm, loss, seed):
    model = mlp(6, 8, 3, seed=seed)
    x = box_points(16, 6, seed=seed)
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    y = torch.arange(16) % 3
    x_adv = pgd(model, x, y, eps, norm=norm, steps=5, loss=loss, seed=seed)
    size = (x_adv - x).norm(dim=1) if norm == 2 else (x_adv - x).abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-9) + 1e-12).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_is_deterministic_with_a_seed_and_random_without_one():
    model = mlp(6, 8, 3, seed=0)
    x = box_points(8, 6, seed=0)
    y = torch.zeros(8, dtype=torch.long)
    first = pgd(model, x, y, 0.2, steps=3, restarts=2, seed=7)
    again = pgd(model, x, y, 0.2, steps=3, restarts=2, seed=7)
    other = pgd(model, x, y, 0.2, steps=3, restarts=2, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("norm", [2.0, INF])
def test_batched_pgd_equals_per_sample_pgd(norm):
    model = mlp(6, 16, 4, seed=1)
    x = box_points(10, 6, seed=2)
    y = model(x).argmax(1)
    eps = torch.linspace(0.05, 0.5, 10, dtype=torch.float64)
    batched = pgd(model, x, y, eps, norm=norm, steps=10, random_start=False)
    single = torch.cat(
        [pgd(model, x[i : i + 1], y[i : i + 1], eps[i : i + 1], norm=norm, steps=10,
             random_start=False) for i in range(10)]
    )
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_restarts_keep_the_best_restart_per_sample():
    model = mlp(6, 16, 4, seed=3)
    x = box_points(32, 6, seed=4)
    y = model(x).argmax(1)
    one = misclassified(model, pgd(model, x, y, 0.15, steps=5, restarts=1, seed=0), y)
    many = misclassified(model, pgd(model, x, y, 0.15, steps=5, restarts=4, seed=0), y)
    # the first of the 4 restarts is the single-restart run (same generator stream)
    assert (many | ~one).all()
    assert many.sum() >= one.sum()


def test_pgd_leaves_the_model_mode_and_parameter_gradients_alone():
    model = mlp(4, 8, 3, seed=0).train()
    x = box_points(4, 4, seed=0)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():  # works even when called under no_grad
        pgd(model, x, y, 0.1, steps=2, seed=0)
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_parameters_require_gradients_again_after_a_failing_attack():
    model = mlp(4, 8, 3, seed=0)
    frozen = model[2].bias
    frozen.requires_grad_(False)  # a frozen parameter stays frozen

    def broken(x):
        assert not any(p.requires_grad for p in model.parameters())  # input gradients only
        raise RuntimeError("boom")

    wrapper = torch.nn.Sequential(model)
    wrapper.forward = broken
    with pytest.raises(RuntimeError, match="boom"):
        pgd(wrapper, box_points(2, 4, seed=0), torch.zeros(2, dtype=torch.long), 0.1)
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]


def test_pgd_rejects_bad_requests():
    model = mlp(4, 8, 3, seed=0)
    x = box_points(4, 4, seed=0)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(BadInputError, match="norm"):
        pgd(model, x, y, 0.1, norm=1)
    with pytest.raises(BadInputError, match="data range"):
        pgd(model, x + 1.0, y, 0.1)
    with pytest.raises(BadInputError, match="eps"):
        pgd(model, x, y, -0.1)
    with pytest.raises(BadInputError, match="NaN"):
        pgd(model, x * math.nan, y, 0.1)
    with pytest.raises(BadInputError, match="y must"):
        pgd(model, x, y[:2], 0.1)
    with pytest.raises(BadInputError, match="random_start"):
        pgd(model, x, y, 0.1, restarts=2, random_start=False)


@pytest.mark.parametrize("call", ["robust_accuracy", "pgd-margin", "pgd-ce", "audit"])
def test_labels_out_of_range_are_one_line_errors(call):
    """#14: robust_accuracy returned 0.0 and pgd/audit raised a raw RuntimeError."""
    from lipcert.attacks import audit, robust_accuracy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 12])
    run = {"robust_accuracy": lambda: robust_accuracy(model, (x, y), [0.1], progress=False),
           "pgd-margin": lambda: pgd(model, x, y, 0.1),
           "pgd-ce": lambda: pgd(model, x, y, 0.1, loss="ce"),
           "audit": lambda: audit(model, x, y, torch.ones(4))}[call]
    with pytest.raises(BadInputError, match=r"labels must lie in \[0, 10\)"):
        run()


def test_fractional_labels_are_refused_by_robust_accuracy():
    from lipcert.attacks import robust_accuracy

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    with pytest.raises(BadInputError, match="fractional"):
        robust_accuracy(model, (torch.rand(2, 1, 4, 4), torch.tensor([0.5, 1.0])), [0.1],
                        progress=False)
