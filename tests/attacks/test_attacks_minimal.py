import pytest
import torch
from attack_oracles import box_points, linear_distance, linear_model, mlp, mlp_radii, points

from lipcert.attacks import carlini_wagner_l2, deepfool, minimal_l2_distance
from lipcert.errors import BadInputError


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_deepfool_lands_one_overshoot_beyond_the_boundary_of_an_affine_binary_classifier():
    model = linear_model(8, 2, seed=0)
    x = points(20, 8, seed=1)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    length = (model.weight[0] - model.weight[1]).norm().detach()
    x_adv = deepfool(model, x, overshoot=0.02, clip=None)
    expected = 1.02 * (distance + 1e-4 / length)  # one step, then the overshoot
    torch.testing.assert_close((x_adv - x).norm(dim=1), expected, rtol=1e-9, atol=0)
    assert (predictions(model, x_adv) != y).all()


def test_deepfool_with_candidate_classes_and_the_data_range():
    model = mlp(6, 16, 5, seed=0)
    x = box_points(12, 6, seed=0)
    x[0] = 1.0
    all_classes = deepfool(model, x)
    top_three = deepfool(model, x, num_classes=3)
    for x_adv in (all_classes, top_three):
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(BadInputError, match="num_classes"):
        deepfool(model, x, num_classes=1)


def test_carlini_wagner_finds_the_binary_distance_and_returns_x_where_it_fails():
    model = linear_model(6, 2, seed=3)
    x = points(10, 6, seed=4, scale=0.3)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    x_adv = carlini_wagner_l2(model, x, y, steps=100, binary_search_steps=9, clip=None)
    found = (x_adv - x).norm(dim=1)
    assert (predictions(model, x_adv) != y).all()
    assert (found >= distance).all()
    assert (found <= 1.05 * distance + 0.002).all()  # Adam steps of 0.01 per coordinate
    # one step only evaluates x itself (correctly classified): nothing found, x comes back
    assert torch.equal(carlini_wagner_l2(model, x, y, 1, 1, clip=None), x)


def test_carlini_wagner_stays_in_the_data_range_and_leaves_gradients_alone():
    model = mlp(6, 16, 3, seed=1)
    x = box_points(8, 6, seed=1)
    y = predictions(model, x)
    x_adv = carlini_wagner_l2(model, x, y, steps=20, binary_search_steps=2)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("classes", [2, 5])
def test_minimal_distance_matches_the_closed_form_of_a_linear_classifier(classes):
    model = linear_model(10, classes, seed=classes)
    x = points(24, 10, seed=5)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    found = minimal_l2_distance(model, x, y, clip=None, cw_steps=50, cw_binary_search_steps=5)
    assert (found >= distance * (1 - 1e-9)).all()  # never below the truth
    torch.testing.assert_close(found, distance, rtol=0.01, atol=0)


def test_minimal_distance_is_an_upper_bound_of_the_certified_radius_of_an_mlp():
    # radius from exact singular values <= true distance <= any verified adversarial distance
    model = mlp(8, 32, 4, seed=2)
    x = box_points(32, 8, seed=3)
    y = predictions(model, x)
    radii = mlp_radii(model, x, y)
    for method in ("deepfool", "cw", "best", "deepfool+cw"):
        found = minimal_l2_distance(model, x, y, method=method, cw_steps=30,
                                    cw_binary_search_steps=4)
        assert (found >= radii).all()
        assert torch.isfinite(found).any()


def test_minimal_distance_counts_only_verified_points_in_the_data_range():
    model = mlp(8, 32, 4, seed=4)
    x = box_points(16, 8, seed=5)
    y = predictions(model, x)
    y[:3] = (y[:3] + 1) % 4  # already misclassified: distance 0
    found = minimal_l2_distance(model, x, y, method="deepfool")
    assert (found[:3] == 0).all() and (found[3:] > 0).all()
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4)).double()
    with torch.no_grad():
        constant[1].weight.zero_()
        constant[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    labels = torch.zeros(16, dtype=torch.long)
    assert torch.isinf(minimal_l2_distance(constant, x, labels)).all()


@pytest.mark.parametrize("method", ["best", "deepfool+cw"])
def test_minimal_distance_batched_equals_per_sample(method):
    # samples leave the DeepFool and Carlini-Wagner batches at different steps
    model = mlp(6, 16, 3, seed=6)
    x = box_points(6, 6, seed=6)
    y = predictions(model, x)
    batched = minimal_l2_distance(model, x, y, method, cw_steps=10, cw_binary_search_steps=2)
    single = torch.cat([
        minimal_l2_distance(model, x[i : i + 1], y[i : i + 1], method, cw_steps=10,
                            cw_binary_search_steps=2) for i in range(6)
    ])
    torch.testing.assert_close(batched, single, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("classes", [2, 5])
def test_deepfool_then_carlini_wagner_is_exact_on_a_linear_classifier_and_below_deepfool(
        classes):
    model = linear_model(10, classes, seed=10 + classes)
    x = points(24, 10, seed=7)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    refined = minimal_l2_distance(model, x, y, "deepfool+cw", clip=None)
    alone = minimal_l2_distance(model, x, y, "deepfool", clip=None)
    assert (refined >= distance * (1 - 1e-9)).all()
    assert (refined <= alone).all()
    torch.testing.assert_close(refined, distance, rtol=0.01, atol=0)


def test_deepfool_then_carlini_wagner_beats_deepfool_on_a_curved_boundary():
    # an MLP's boundary is piecewise linear: DeepFool's overshoot and its path leave room
    model = mlp(8, 64, 4, seed=8)
    x = box_points(48, 8, seed=8)
    y = predictions(model, x)
    refined = minimal_l2_distance(model, x, y, "deepfool+cw")
    alone = minimal_l2_distance(model, x, y, "deepfool")
    finite = torch.isfinite(alone)
    assert finite.sum() >= 40 and (refined <= alone).all()
    assert (refined[finite] < 0.99 * alone[finite]).float().mean() >= 0.5


def test_verification_uses_the_model_not_the_attack_model():
    model = linear_model(10, 3, seed=20)
    impostor = linear_model(10, 3, seed=21)
    x = points(16, 10, seed=9)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    found = minimal_l2_distance(model, x, y, "deepfool+cw", clip=None, attack_model=impostor)
    assert (found >= distance * (1 - 1e-9)).all()  # whatever the impostor proposes


def test_carlini_wagner_from_a_start_with_per_sample_constants():
    model = linear_model(6, 2, seed=5)
    x = points(10, 6, seed=6, scale=0.3)
    y = predictions(model, x)
    distance = linear_distance(model, x, y)
    direction = model.weight[1 - y] - model.weight[y]
    start = x + direction * (1.5 * distance / direction.norm(dim=1))[:, None]  # past the boundary
    const = torch.linspace(2.0, 20.0, 10, dtype=torch.float64)
    x_adv = carlini_wagner_l2(model, x, y, steps=100, binary_search_steps=1, clip=None,
                              initial_const=const, start=start)
    found = (x_adv - x).norm(dim=1)
    assert (predictions(model, x_adv) != y).all()
    # within about one Adam step of the truth (0.01 per coordinate: 0.025 in 6 dimensions)
    assert (found >= distance).all() and (found <= distance + 0.025).all()
    with pytest.raises(BadInputError, match="initial_const"):
        carlini_wagner_l2(model, x, y, clip=None,
                          initial_const=torch.zeros(10, dtype=torch.float64))
    with pytest.raises(BadInputError, match="start"):
        carlini_wagner_l2(model, x, y, clip=None, start=x[:3])
    # from the start, one step evaluates the start itself: a success at 1.5x the distance
    once = carlini_wagner_l2(model, x, y, steps=1, binary_search_steps=1, clip=None,
                             start=start)
    torch.testing.assert_close((once - x).norm(dim=1), 1.5 * distance)


def test_minimal_distance_rejects_unknown_methods():
    model = mlp(4, 8, 3, seed=0)
    x = box_points(2, 4, seed=0)
    with pytest.raises(BadInputError, match="method"):
        minimal_l2_distance(model, x, torch.zeros(2, dtype=torch.long), method="fgsm")
