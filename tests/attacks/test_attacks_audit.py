import importlib
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


def sll_case(count=64):
    from attack_oracles import trained_sll

    from lipcert import data
    from lipcert.certify import lipschitz_radii

    model = trained_sll()
    x, y = data.load("digits", "test").tensors
    x, y = x[:count], y[:count]
    return model, x, y, lipschitz_radii(model, x, y)


class RecordingBar:
    """Stands in for lipcert.progress.progress_bar: records every update."""

    def __init__(self, **options):
        self.options, self.updates, self.closed = options, [], False

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def recording_bars(monkeypatch):
    audit_module = importlib.import_module("lipcert.attacks.audit")  # the name is the function

    bars = []

    def make(**options):
        bars.append(RecordingBar(**options))
        return bars[-1]

    monkeypatch.setattr(audit_module, "progress_bar", make)
    return bars


def test_progress_moves_at_least_every_32_points(monkeypatch):
    bars = recording_bars(monkeypatch)
    model, x, y, distance = linear_case(count=150)
    radii = 0.9 * distance
    radii[:7] = 0  # not certified: not attacked, counted at once
    report = audit(model, x, y, radii, progress=True, **FAST)
    (bar,) = bars
    assert report.num_certified == 143
    assert bar.options["enabled"] and bar.options["total"] == 150
    assert bar.closed and sum(bar.updates) == 150 and bar.updates[0] == 7
    attacked = bar.updates[1:]
    assert sum(attacked) == 143 and max(attacked) <= 32 and min(attacked) >= 1
    audit(model, x, y, radii, **FAST)
    assert not bars[1].options["enabled"]  # progress=False by default


def test_the_fast_default_matches_the_exhaustive_search_on_an_sll_network():
    """deepfool+cw (the default) against the 9-round Carlini-Wagner search from x ("best",
    the default before): median tightness within 5%, and never above DeepFool's alone."""
    model, x, y, radii = sll_case()
    fast = audit(model, x, y, radii, pgd_steps=20)
    exhaustive = audit(model, x, y, radii, pgd_steps=20, minimal_method="best", batch_size=256)
    deepfool_only = audit(model, x, y, radii, pgd_steps=20, minimal_method="deepfool")
    assert fast.violations == exhaustive.violations == 0
    assert fast.num_certified >= 16
    ratio = fast.tightness.median() / exhaustive.tightness.median()
    assert 0.95 <= ratio <= 1.05
    assert (fast.minimal_distances[fast.certified]
            <= deepfool_only.minimal_distances[fast.certified]).all()
    assert (fast.tightness >= 1).all()


@pytest.mark.parametrize("factor", [1.3, 3.0])
def test_the_fast_default_finds_the_violations_of_the_exhaustive_search(factor):
    model, x, y, radii = sll_case()
    with pytest.warns(CertificateViolationWarning):
        fast = audit(model, x, y, factor * radii, pgd_steps=20)
    with pytest.warns(CertificateViolationWarning):
        exhaustive = audit(model, x, y, factor * radii, pgd_steps=20, minimal_method="best")
    assert fast.violations > 0
    assert set(exhaustive.violating_indices.tolist()) <= set(fast.violating_indices.tolist())


def test_the_attacks_run_on_a_copy_but_every_distance_is_verified_on_the_model(monkeypatch):
    """A copy that disagrees with the model (a wrong export) cannot produce a violation:
    the points its attacks find are checked on the model itself."""
    audit_module = importlib.import_module("lipcert.attacks.audit")  # the name is the function

    model, x, y, distance = linear_case(seed=15)
    flipped = linear_model(8, 4, seed=99)  # another classifier: its adversarials are bogus
    monkeypatch.setattr(audit_module, "attack_copy", lambda model, x: flipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CertificateViolationWarning)
        report = audit(model, x, y, 0.99 * distance, pgd_steps=20, clip=None)
    assert report.violations == 0
    assert (report.tightness[torch.isfinite(report.tightness)] >= 1).all()


def test_attack_copy_is_bit_identical_or_the_model_itself():
    from attack_oracles import trained_sll

    from lipcert import data
    from lipcert.attacks.common import attack_copy

    model = trained_sll()
    x = data.load("digits", "test").tensors[0][:16]
    copy = attack_copy(model, x)
    assert copy is not model
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))
    plain = linear_model(8, 4, seed=0)
    assert attack_copy(plain, points(4, 8, seed=0)) is not plain  # a deep copy, same logits
    assert attack_copy(lambda t: t, x) is not None
