"""The margin losses against hand computations (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lipcert.errors import BadInputError, LipcertError
from lipcert.losses import (
    HKRLoss,
    LMTLoss,
    MarginCrossEntropy,
    MultiMarginHinge,
    build_loss,
)
from lipcert.losses.hkr import kantorovich_rubinstein

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
TARGET = torch.tensor([0, 1])


def cross_entropy_by_hand(rows: list[list[float]], labels: list[int]) -> float:
    losses = [math.log(sum(math.exp(v) for v in row)) - row[y]
              for row, y in zip(rows, labels, strict=True)]
    return sum(losses) / len(losses)


def test_margin_cross_entropy_matches_hand_computation():
    offset, temp = 1.0, 0.5
    rows = [[(v - offset * (j == y)) / temp for j, v in enumerate(row)]
            for row, y in zip(LOGITS.tolist(), TARGET.tolist(), strict=True)]
    expected = temp * cross_entropy_by_hand(rows, TARGET.tolist())
    got = MarginCrossEntropy(offset, temp)(LOGITS, TARGET)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_margin_cross_entropy_with_zero_offset_and_unit_temperature_is_cross_entropy():
    got = MarginCrossEntropy(0.0, 1.0)(LOGITS, TARGET)
    assert float(got) == pytest.approx(float(F.cross_entropy(LOGITS, TARGET)), rel=1e-12)


def test_multi_margin_hinge_matches_hand_computation():
    # row 0 (y=0): margins 1.5, 3.0 -> violations max(0, 2-1.5)=0.5, max(0, 2-3)=0
    # row 1 (y=1): margins 1.0, -2.0 -> violations 1.0, 4.0
    expected = ((0.5 + 0.0) / 3 + (1.0 + 4.0) / 3) / 2
    got = MultiMarginHinge(margin=2.0)(LOGITS, TARGET)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    torch_value = torch.nn.MultiMarginLoss(margin=2.0)(LOGITS, TARGET)
    assert float(got) == pytest.approx(float(torch_value), rel=1e-12)


def test_hkr_hinge_and_kr_parts_match_hand_computation():
    margin = 1.0
    # hinge terms relu(m/2 - s z), true class weighted by C-1 = 2, mean over 6 entries
    row0 = 2 * max(0, 0.5 - 2.0) + max(0, 0.5 + 0.5) + max(0, 0.5 - 1.0)
    row1 = max(0, 0.5 - 0.0) + 2 * max(0, 0.5 - 1.0) + max(0, 0.5 + 3.0)
    hinge = (row0 + row1) / 6
    # KR: class 0: E[z0|y=0]=2 minus E[z0|y!=0]=0 -> 2; class 1: 1 - 0.5 = 0.5;
    # class 2 has no positive example in the batch and is left out.
    kr = (2.0 + 0.5) / 2
    assert float(kantorovich_rubinstein(LOGITS, TARGET)) == pytest.approx(kr, rel=1e-12)
    alpha = 0.9
    got = HKRLoss(alpha, margin)(LOGITS, TARGET)
    assert float(got) == pytest.approx(alpha * hinge - (1 - alpha) * kr, rel=1e-12)


def test_lmt_global_adds_sqrt2_eps_L_to_non_target_logits():
    eps, lip = 0.3, torch.tensor(2.0, dtype=torch.float64)
    shift = math.sqrt(2) * eps * 2.0
    rows = [[v + shift * (j != y) for j, v in enumerate(row)]
            for row, y in zip(LOGITS.tolist(), TARGET.tolist(), strict=True)]
    got = LMTLoss(eps)(LOGITS, TARGET, lip)
    assert float(got) == pytest.approx(cross_entropy_by_hand(rows, TARGET.tolist()), rel=1e-12)


def test_lmt_pairwise_uses_the_row_of_the_target_class():
    eps = 0.5
    pair = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]], dtype=torch.float64)
    rows = [[v + eps * pair[y, j].item() for j, v in enumerate(row)]
            for row, y in zip(LOGITS.tolist(), TARGET.tolist(), strict=True)]
    got = LMTLoss(eps, pairwise=True)(LOGITS, TARGET, pair)
    assert float(got) == pytest.approx(cross_entropy_by_hand(rows, TARGET.tolist()), rel=1e-12)


def test_lmt_with_zero_eps_is_cross_entropy():
    logits = torch.randn(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.arange(16) % 10
    got = LMTLoss(0.0)(logits, target, torch.tensor(123.0, dtype=torch.float64))
    assert torch.equal(got, F.cross_entropy(logits, target))


def test_lmt_eps_ramp_and_callable_schedule():
    loss = LMTLoss(1.0, ramp_epochs=4)
    seen = []
    for epoch in range(6):
        loss.set_epoch(epoch)
        seen.append(loss.eps)
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    scheduled = LMTLoss(lambda epoch: 0.1 * epoch)
    scheduled.set_epoch(3)
    assert scheduled.eps == pytest.approx(0.3)
    with pytest.raises(BadInputError):
        LMTLoss(lambda epoch: -1.0)


def test_lmt_rejects_a_bound_of_the_wrong_shape():
    with pytest.raises(BadInputError):
        LMTLoss(0.1)(LOGITS, TARGET, torch.ones(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("loss", [MarginCrossEntropy(), MultiMarginHinge(), HKRLoss()])
def test_losses_reject_labels_outside_the_logits(loss):
    with pytest.raises(BadInputError, match="labels"):
        loss(LOGITS, torch.tensor([0, 3]))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("margin-ce", MarginCrossEntropy), ("hinge", MultiMarginHinge), ("hkr", HKRLoss),
     ("lmt", LMTLoss), ("lmt++", LMTLoss), ("ce", torch.nn.CrossEntropyLoss)],
)
def test_build_loss_by_name(name, kind):
    assert isinstance(build_loss(name, eps=0.5), kind)


def test_build_loss_derives_margins_from_eps_and_rejects_bad_settings():
    assert build_loss("margin-ce", eps=1.0).offset == pytest.approx(2 * math.sqrt(2))
    assert build_loss("margin-ce", eps=0.5).offset == pytest.approx(math.sqrt(2))
    assert build_loss("margin-ce", eps=1.0, offset=0.3).offset == pytest.approx(0.3)
    assert build_loss("hinge", eps=0.5).margin == pytest.approx(math.sqrt(2))
    assert build_loss("hkr", eps=0.5).margin == pytest.approx(math.sqrt(2) / 2)
    assert build_loss("lmt++", eps=0.5).pairwise
    with pytest.raises(LipcertError, match="unknown loss"):
        build_loss("focal")
    with pytest.raises(LipcertError, match="eps"):
        build_loss("lmt", eps=-1.0)
    with pytest.raises(LipcertError, match="alpha"):
        HKRLoss(alpha=1.5)
