import json

import pytest
from attack_oracles import trained_sll

from lipcert import models
from lipcert.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("attack-cli") / "model.safetensors"
    models.save(trained_sll(), path, dataset="digits")
    return path


def test_attack_prints_a_robust_accuracy_table(checkpoint, capsys, tmp_path):
    out = tmp_path / "attack.json"
    code = main(["attack", str(checkpoint), "--eps", "0", "0.5", "--steps", "5", "--limit",
                 "24", "--no-progress", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "robust accuracy" in text and "clean accuracy" in text
    result = json.loads(out.read_text())
    rows = result["results"]
    assert [row["eps"] for row in rows] == [0.0, 0.5]
    assert rows[0]["robust_accuracy"] == result["clean_accuracy"]
    assert rows[1]["robust_accuracy"] <= rows[0]["robust_accuracy"]


def test_attack_with_deepfool_and_linf_pgd(checkpoint, capsys):
    assert main(["attack", str(checkpoint), "--data", "digits", "--eps", "0.3", "--attack",
                 "deepfool", "--limit", "8", "--no-progress"]) == 0
    assert main(["attack", str(checkpoint), "--norm", "inf", "--eps", "0.05", "--steps", "3",
                 "--loss", "ce", "--limit", "8", "--no-progress"]) == 0
    assert main(["attack", str(checkpoint), "--norm", "inf", "--eps", "0.05", "--attack", "cw",
                 "--limit", "8", "--no-progress"]) == 1
    assert "l2 attack" in capsys.readouterr().err


def test_audit_prints_violations_and_tightness_and_plots(checkpoint, capsys, tmp_path):
    plot, out = tmp_path / "hist.png", tmp_path / "audit.json"
    code = main(["audit", str(checkpoint), "--steps", "10", "--limit", "16", "--minimal",
                 "deepfool", "--plot", str(plot), "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "violations: 0" in text and "median" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(out.read_text())
    assert summary["violations"] == 0 and summary["tightness_min"] >= 1


def test_audit_exits_with_an_error_on_a_broken_certificate(checkpoint, capsys, monkeypatch):
    import lipcert.certify

    honest = lipcert.certify.lipschitz_radii
    monkeypatch.setattr(lipcert.certify, "lipschitz_radii",
                        lambda *args, **kwargs: 3 * honest(*args, **kwargs))
    with pytest.warns(UserWarning, match="BROKEN"):
        code = main(["audit", str(checkpoint), "--steps", "10", "--limit", "16", "--minimal",
                     "deepfool"])
    assert code == 1
    assert "BROKEN CERTIFICATES" in capsys.readouterr().err


def test_audit_progress_is_the_python_bar_and_moves_every_32_points(checkpoint, monkeypatch,
                                                                      capsys):
    import importlib

    audit_module = importlib.import_module("lipcert.attacks.audit")
    updates, bars = [], []

    class Bar:
        def __init__(self, **options):
            bars.append(options)

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(audit_module, "progress_bar", lambda **options: Bar(**options))
    assert main(["audit", str(checkpoint), "--steps", "5", "--limit", "100"]) == 0
    text = capsys.readouterr().out
    assert "violations: 0" in text
    (options,) = bars  # one bar: the audit's own
    assert options["enabled"] and sum(updates) == options["total"] == 100
    # the uncertified points count at once, then the attacked ones move the bar by <= 32
    assert len(updates) > 2 and max(updates[1:]) <= 32
    assert main(["audit", str(checkpoint), "--steps", "5", "--limit", "8", "--no-progress"]) == 0
    assert not bars[1]["enabled"]


def test_attack_rejects_a_bad_limit(checkpoint, capsys):
    assert main(["attack", str(checkpoint), "--eps", "0.1", "--limit", "0"]) == 1
    assert "--limit" in capsys.readouterr().err


def test_attack_fgsm_matches_the_python_attack(checkpoint, capsys, tmp_path):
    import torch

    from lipcert import data
    from lipcert.attacks import fgsm

    out = tmp_path / "fgsm.json"
    assert main(["attack", str(checkpoint), "--attack", "fgsm", "--norm", "inf", "--eps", "0.05",
                 "--loss", "ce", "--limit", "32", "--no-progress", "--json", str(out)]) == 0
    assert "one step, ce loss" in capsys.readouterr().out
    robust = json.loads(out.read_text())["results"][0]["robust_accuracy"]
    model = models.load(checkpoint)
    x, y = data.load("digits", "test").tensors
    x, y = x[:32], y[:32]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x_adv = fgsm(model, x[correct], y[correct], 0.05, loss="ce")
    with torch.no_grad():
        expected = int((model(x_adv).argmax(1) == y[correct]).sum()) / 32
    assert robust == expected


def test_attack_takes_eot_and_votes(checkpoint, capsys, tmp_path):
    out = tmp_path / "eot.json"
    assert main(["attack", str(checkpoint), "--eps", "0.3", "--steps", "2", "--eot", "2",
                 "--votes", "3", "--limit", "8", "--no-progress", "--json", str(out)]) == 0
    assert "EOT 2, 3 vote(s)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["eot"], result["votes"]) == (2, 3)
    assert main(["attack", str(checkpoint), "--eps", "0.3", "--eot", "0"]) == 1
    assert "--eot" in capsys.readouterr().err


def test_attack_autoattack_from_the_command_line(checkpoint, capsys):
    pytest.importorskip("torchattacks")
    assert main(["attack", str(checkpoint), "--attack", "autoattack", "--norm", "inf", "--eps",
                 "0.02", "--limit", "2", "--no-progress"]) == 0
    assert "APGD-CE, APGD-T, FAB-T, Square" in capsys.readouterr().out
