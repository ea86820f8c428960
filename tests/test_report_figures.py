"""One certified-accuracy figure for every command; titles and labels that name the run (#14)."""

from __future__ import annotations

import torch

from lipcert.report import certified_accuracy_figure


def test_curve_runs_until_every_curve_reaches_zero():
    radii = {"a": torch.tensor([0.0, 0.5, 2.5, 3.0]), "b": torch.tensor([1.0, 0.0])}
    fig = certified_accuracy_figure(radii, marks=[0.5, 1.0], title="t")
    ax = fig.axes[0]
    assert ax.get_xlim()[1] >= 3.0  # the demo used to cut at 2.0 while accuracy was 0.19
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label()
             .startswith("_")}
    assert set(lines) == {"a", "b"}
    x, y = lines["a"].get_data()
    assert y[0] == 0.75 and y[-1] == 0.0  # radius > 0: 3 of 4; beyond the largest: none
    texts = [t.get_text() for t in ax.texts]
    assert "0.500" in texts  # b at 0.5: one of two points
    assert ax.get_title() == "t"


def test_sample_figure_titles_each_image_with_its_class():
    from lipcert.cli.data_cmd import sample_figure

    images = torch.rand(5, 1, 4, 4)
    labels = torch.tensor([3, 1, 4, 1, 5])
    names = [f"class{i}" for i in range(10)]
    fig = sample_figure(images, labels, names, 5, "grid")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["class3", "class1", "class4", "class1", "class5"]
