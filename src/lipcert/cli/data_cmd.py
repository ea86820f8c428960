"""``lipcert data list`` and ``lipcert data show NAME``."""

from __future__ import annotations

import argparse
import math

import torch

from lipcert import data
from lipcert.cli._common import FIGURE_SUFFIXES, check_int, check_output_file
from lipcert.report import format_table, new_figure, save_figure


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="list and inspect data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the data sets lipcert can load")
    listing.set_defaults(func=run_list)

    show = sub.add_parser("show", help="counts per class, shape, and a PNG grid of samples")
    show.add_argument("name", help="data set name (see `lipcert data list`)")
    show.add_argument("--split", default="train", choices=data.registry.SPLITS,
                      help="which split to show (default train)")
    show.add_argument("--root", default=None, metavar="FOLDER",
                      help="folder with the original files (local data sets only)")
    show.add_argument("--plot", "--out", dest="out", default=None, metavar="FILE",
                      help="write a grid of sample images to FILE (.png, .pdf or .svg)")
    show.add_argument("--samples", type=int, default=64, metavar="N",
                      help="images in the grid (default 64)")
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for name in data.list_datasets():
        meta = data.info(name)
        sizes = " / ".join(str(meta.sizes[s]) for s in data.registry.SPLITS)
        where = "embedded" if meta.embedded else "local (--root)"
        rows.append([name, "x".join(map(str, meta.shape)), meta.num_classes, sizes, where])
    print(format_table(rows, ["name", "shape", "classes", "train / test", "source"], args.table))
    return 0


def sample_figure(images: torch.Tensor, labels: torch.Tensor, class_names, count: int,
                  title: str):
    """The first ``count`` images (N, C, H, W) in a square grid, each titled with its class."""
    import matplotlib.pyplot as plt


    count = max(1, min(count, len(images)))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig, _ = new_figure(1.1 * cols, 1.2 * rows + 0.4)
    fig.clear()
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= count:
            continue
        pixels = images[i].permute(1, 2, 0)
        pixels = pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels
        ax.imshow(pixels.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(str(class_names[int(labels[i])]), fontsize=7, pad=2)
    fig.suptitle(title, fontsize="medium")
    plt.setp(axes, xticks=[], yticks=[])
    return fig


def run_show(args: argparse.Namespace) -> int:
    check_int(args, "samples", 1)
    check_output_file(args.out, "plot", FIGURE_SUFFIXES)
    meta = data.info(args.name)
    dataset = data.load(args.name, args.split, root=args.root)
    images, labels = dataset.tensors
    counts = torch.bincount(labels, minlength=meta.num_classes)
    print(f"{args.name} ({args.split}): {len(labels)} images of shape {tuple(images.shape[1:])}, "
          f"values in [{images.min().item():.3g}, {images.max().item():.3g}]")
    print(f"source: {meta.source}")
    rows = [[i, meta.classes[i], int(n)] for i, n in enumerate(counts)]
    print(format_table(rows, ["label", "class", "count"], args.table))
    if args.out:
        fig = sample_figure(images, labels, meta.classes, args.samples,
                            f"{args.name} {args.split}: first "
                            f"{min(args.samples, len(labels))} images and their classes")
        print(f"wrote {save_figure(fig, args.out)}")
    return 0
