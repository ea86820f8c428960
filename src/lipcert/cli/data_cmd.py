"""``lipcert data list`` and ``lipcert data show NAME``."""

from __future__ import annotations

import argparse

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


def sample_grid(images: torch.Tensor, count: int) -> torch.Tensor:
    """Tile the first ``count`` images (N, C, H, W) into one (H', W', C) array for imshow."""
    count = max(1, min(count, len(images)))
    cols = int(torch.ceil(torch.tensor(count**0.5)).item())
    rows = (count + cols - 1) // cols
    c, h, w = images.shape[1:]
    grid = torch.ones(rows * (h + 1) + 1, cols * (w + 1) + 1, c)
    for i in range(count):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = (
            images[i].permute(1, 2, 0)
        )
    return grid


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
        grid = sample_grid(images, args.samples)
        fig, ax = new_figure(6, 6)
        pixels = (grid.squeeze(-1) if grid.shape[-1] == 1 else grid).numpy()
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{args.name} {args.split}: first {min(args.samples, len(labels))} images")
        print(f"wrote {save_figure(fig, args.out)}")
    return 0
