"""``lipcert certify CHECKPOINT --eps ...``: Lipschitz-margin certified accuracy."""

from __future__ import annotations

import argparse

import torch

from lipcert.cli._common import (
    add_data_flags,
    add_plot_flag,
    check_radii,
    run_title,
    write_results,
)
from lipcert.errors import BadInputError
from lipcert.progress import progress_bar


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "certify", help="certified accuracy of a checkpoint from its Lipschitz bound",
        description="Bound the saved model's Lipschitz constant once, then certify every point "
        "of the data set with the Lipschitz-margin radius (Tsuzuku et al. 2018) and print the "
        "certified accuracy at each radius.",
    )
    add_data_flags(parser)
    parser.add_argument("--eps", type=float, nargs="+", required=True, metavar="EPS",
                        help="l2 radii (one or more, >= 0) to report the certified accuracy at")
    parser.add_argument("--last-layer", choices=("pairwise", "global"), default="pairwise",
                        help="certificate form (default pairwise: LMT's last-layer refinement)")
    add_plot_flag(parser, "the certified accuracy against the radius")
    parser.set_defaults(func=run_certify)


def certify_batches(model, x: torch.Tensor, y: torch.Tensor, bound, batch_size: int,
                    last_layer: str = "pairwise", progress: bool = True) -> torch.Tensor:
    """Certified radius of every point, batch by batch, with one precomputed bound."""
    from lipcert.certify import lipschitz_radii

    if batch_size < 1:
        raise BadInputError(f"--batch-size must be >= 1, got {batch_size}.")
    radii = []
    with torch.no_grad():
        for start in progress_bar(range(0, len(y), batch_size), desc="certify", unit="batch",
                                  enabled=progress):
            # lipschitz_radii sees the model, so its rounding allowance is derived, not guessed
            radii.append(lipschitz_radii(model, x[start : start + batch_size],
                                         y[start : start + batch_size], bound, last_layer))
    return torch.cat(radii)


def run_certify(args: argparse.Namespace) -> int:
    from lipcert.bounds import lipschitz_bound
    from lipcert.certify import certified_accuracy
    from lipcert.cli.attack_cmd import load_model_and_data
    from lipcert.report import certified_accuracy_figure, format_table, save_figure

    check_radii(args.eps)
    model, x, y = load_model_and_data(args)
    bound = lipschitz_bound(model, x[:1])
    radii = certify_batches(model, x, y, bound, args.batch_size, args.last_layer, args.progress)
    accuracy = certified_accuracy(radii, [0.0, *args.eps])
    print(f"Lipschitz bound {float(bound):.6g} ({bound.guarantee}); certificate "
          f"{args.last_layer}; clean accuracy {accuracy[0.0]:.4f}")
    print(format_table([[e, f"{accuracy[e]:.4f}"] for e in args.eps],
                       ["eps", "certified accuracy"], args.table))
    if args.plot:
        figure = certified_accuracy_figure(
            {f"Lipschitz margin ({args.last_layer})": radii}, marks=args.eps,
            title=run_title(args, "certified accuracy", len(y)))
        print(f"wrote {save_figure(figure, args.plot)}")
    if args.json:
        correct = radii[radii > 0]
        write_results(args, {
            "checkpoint": args.checkpoint, "lipschitz_bound": float(bound),
            "guarantee": bound.guarantee, "last_layer": args.last_layer, "points": len(y),
            "clean_accuracy": accuracy[0.0],
            "median_radius_certified": float(correct.median()) if correct.numel() else 0.0,
            "certified_accuracy": [{"eps": e, "accuracy": accuracy[e]} for e in args.eps],
        })
    return 0
