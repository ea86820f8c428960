import math
import warnings

import pytest
import torch
from attack_oracles import box_points, linear_distance, linear_model, mlp, mlp_radii, points

from lipcert.attacks import (
    AuditReport,
    CertificateViolationError,
    CertificateViolationWarning,
    audit,
)
from lipcert.errors import BadInputError, LipcertError

FAST = {"pgd_steps": 20, "clip": None, "minimal_method": "deepfool"}


def linear_case(count=24, classes=4, seed=0):
    model = linear_model(8, classes, seed=seed)
    x = points(count, 8, seed=seed + 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, linear_distance(model, x, y)


def test_audit_finds_a_planted_violation_loudly():
    model, x, y, distance = linear_case()
    with pytest.warns(CertificateViolationWarning, match="BROKEN CERTIFICATES"):
        report = audit(model, x, y, 2 * distance, **FAST)
    assert isinstance(report.violations, int)
    assert report.violations == len(y)  # every ball of twice the true radius holds an attack
    assert report.pgd_broken.sum() > 0
    with pytest.raises(CertificateViolationError) as raised:
        report.raise_if_violated()
    assert isinstance(raised.value, LipcertError)
    assert "violations: 24" in str(report)


def test_a_single_slightly_wrong_radius_is_caught():
    model, x, y, distance = linear_case(seed=3)
    radii = 0.99 * distance
    radii[5] = 1.02 * distance[5]  # 2% too large
    with pytest.warns(CertificateViolationWarning):
        report = audit(model, x, y, radii, **FAST)
    assert report.violations == 1
    assert report.violating_indices.tolist() == [5]


def test_audit_of_correct_radii_finds_nothing_and_measures_tightness():
    model, x, y, distance = linear_case(seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CertificateViolationWarning)
        report = audit(model, x, y, 0.99 * distance, pgd_steps=20, clip=None)  # DeepFool and CW
    assert report.violations == 0
    report.raise_if_violated()
    assert report.num_certified == len(y)
    # minimal distance within 1% of the truth, so tightness close to 1 / 0.99
    assert (report.tightness >= 1 / 0.99 * (1 - 1e-9)).all()
    assert (report.tightness <= 1.01 / 0.99).all()
    text = str(report)
    assert "violations: 0" in text and "median 1.01" in text


def test_audit_of_sound_mlp_radii_in_the_data_range_finds_no_violation():
    model = mlp(8, 32, 4, seed=1)
    x = box_points(32, 8, seed=2)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 4  # misclassified points get radius 0: not attacked
    radii = mlp_radii(model, x, y)
    assert (radii[:4] == 0).all() and (radii[4:] > 0).all()
    report = audit(model, x, y, radii, pgd_steps=20)
    assert report.violations == 0 and report.num_certified == 28
    assert torch.isnan(report.minimal_distances[:4]).all()
    assert (report.tightness >= 1).all()
    summary = report.summary()
    assert summary["certified"] == 28 and summary["violations"] == 0
    assert summary["tightness_min"] == pytest.approx(report.tightness.min().item())


def test_a_certified_point_that_is_already_misclassified_is_a_violation():
    model, x, y, distance = linear_case(seed=9)
    wrong = y.clone()
    wrong[0] = (wrong[0] + 1) % 4
    with pytest.warns(CertificateViolationWarning):
        report = audit(model, x, wrong, 0.5 * distance, **FAST)
    assert report.violating_indices.tolist() == [0]
    assert report.minimal_distances[0] == 0


def test_audit_batches_and_rejects_bad_radii():
    model, x, y, distance = linear_case(seed=12)
    whole = audit(model, x, y, 0.9 * distance, **FAST)
    pieces = audit(model, x, y, 0.9 * distance, batch_size=5, **FAST)
    torch.testing.assert_close(whole.minimal_distances, pieces.minimal_distances)
    with pytest.raises(BadInputError, match="radii"):
        audit(model, x, y, -distance, **FAST)
    with pytest.raises(BadInputError, match="radii"):
        audit(model, x, y, distance * math.nan, **FAST)
    with pytest.raises(BadInputError, match="budget"):
        audit(model, x, y, distance, budget=1.0, **FAST)
    empty = audit(model, x, y, torch.zeros_like(distance), **FAST)
    assert empty.violations == 0 and empty.num_certified == 0 and len(empty.tightness) == 0
    assert isinstance(empty, AuditReport) and "0 certified" in str(empty)


def test_audit_of_a_trained_lipcert_model_with_lipschitz_radii_finds_no_violation():
    from attack_oracles import trained_sll

    from lipcert import data
    from lipcert.certify import lipschitz_radii

    model = trained_sll()
    x, y = data.load("digits", "test").tensors
    x, y = x[:32], y[:32]
    radii = lipschitz_radii(model, x, y)
    assert (radii > 0).sum() >= 16
    report = audit(model, x, y, radii, pgd_steps=20)
    assert report.violations == 0
    assert (report.tightness >= 1).all()
    # a bound that is wrong by a factor 3 is caught
    with pytest.warns(CertificateViolationWarning):
        wrong = audit(model, x, y, 3 * radii, pgd_steps=20, minimal_method="deepfool")
    assert wrong.violations > 0
