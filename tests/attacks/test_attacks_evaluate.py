import pytest
import torch
from attack_oracles import linear_distance, linear_model, mlp, points
from torch.utils.data import TensorDataset

from lipcert.attacks import robust_accuracy
from lipcert.errors import BadInputError

INF = float("inf")


def labelled(model, count, seed):
    """Points labelled by the model, with 1 in 4 labels flipped (misclassified)."""
    x = points(count, 10, seed=seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = 1 - y[::4]
    return x, y


def test_robust_accuracy_matches_the_closed_form_for_l2_and_linf_side_by_side():
    model = linear_model(10, 2, seed=0)
    x, y = labelled(model, 64, seed=1)
    correct = model(x).argmax(1) == y
    radii = {2.0: [0.0, 0.25, 0.8], INF: [0.0, 0.05, 0.3]}
    result = robust_accuracy(
        model, (x, y), radii, norm=[2, INF], batch_size=20, progress=False, clip=None, steps=30
    )
    assert result["count"] == 64 and result["clean_accuracy"] == int(correct.sum()) / 64
    expected = []
    for norm, dual in ((2.0, 2), (INF, 1)):
        distance = linear_distance(model, x, model(x).argmax(1), dual=dual)
        for eps in radii[norm]:
            # PGD's default path (2.5 eps) from a random start gets within ~2% of the optimum
            assert not ((distance > eps * 0.95) & (distance < eps * 1.05)).any()
            robust = int((correct & (distance > eps)).sum()) / 64
            expected.append({"norm": norm, "eps": eps, "robust_accuracy": robust})
    assert result["results"] == expected


@pytest.mark.parametrize("attack", ["deepfool", "cw"])
def test_minimal_distance_attacks_give_the_closed_form_robust_accuracy(attack):
    model = linear_model(10, 2, seed=2)
    x, y = labelled(model, 40, seed=3)
    correct = model(x).argmax(1) == y
    distance = linear_distance(model, x, model(x).argmax(1))
    eps_list = [0.2, 0.42, 1.0]
    result = robust_accuracy(
        model, TensorDataset(x, y), eps_list, attack=attack, progress=False, clip=None, steps=100
    )
    for row, eps in zip(result["results"], eps_list, strict=True):
        # distances found within 5% of the truth: no point is decided differently
        assert not ((distance > eps * 0.95) & (distance < eps * 1.05)).any()
        assert row["robust_accuracy"] == int((correct & (distance > eps)).sum()) / 40


def test_robust_accuracy_accepts_a_dataset_and_shows_a_progress_bar(capsys):
    model = mlp(10, 8, 2, seed=0)
    x, y = labelled(model, 10, seed=4)
    x = x.sigmoid()
    by_tuple = robust_accuracy(model, (x, y), [0.1], progress=True, steps=3)
    by_dataset = robust_accuracy(model, TensorDataset(x, y), [0.1], progress=False, steps=3)
    assert by_tuple == by_dataset
    assert "pgd attack" in capsys.readouterr().err


def test_robust_accuracy_rejects_bad_requests():
    model = mlp(10, 8, 2, seed=0)
    x, y = labelled(model, 4, seed=5)
    x = x.sigmoid()
    with pytest.raises(BadInputError, match="l2 attack"):
        robust_accuracy(model, (x, y), [0.1], norm=INF, attack="deepfool", progress=False)
    with pytest.raises(BadInputError, match="attack must"):
        robust_accuracy(model, (x, y), [0.1], attack="apgd", progress=False)
    with pytest.raises(BadInputError, match="no radii"):
        robust_accuracy(model, (x, y), {2: [0.1]}, norm=[2, INF], progress=False)
    with pytest.raises(BadInputError, match="norm must"):
        robust_accuracy(model, (x, y), [0.1], norm="l1", progress=False)
    with pytest.raises(BadInputError, match="finite radii"):
        robust_accuracy(model, (x, y), [-1.0], progress=False)
