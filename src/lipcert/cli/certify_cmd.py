"""``lipcert certify CHECKPOINT --eps ...``: Lipschitz-margin certified accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lipcert.cli._common import add_data_flags, add_plot_flag, check_radii, write_results
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
    from lipcert.certify import margin_radii

    if batch_size < 1:
        raise BadInputError(f"--batch-size must be >= 1, got {batch_size}.")
    radii = []
    with torch.no_grad():
        for start in progress_bar(range(0, len(y), batch_size), desc="certify", unit="batch",
                                  enabled=progress):
            logits = model(x[start : start + batch_size])
            radii.append(margin_radii(logits, bound, y[start : start + batch_size], last_layer))
    return torch.cat(radii)


def accuracy_curve(radii: torch.Tensor, eps: list[float], title: str | None = None):
    """Figure of certified accuracy against radius, with the requested radii marked."""
    from lipcert.report import new_figure

    radii = radii.detach().double().cpu()
    finite = radii[torch.isfinite(radii)]
    top = max(max(eps), float(finite.max()) if finite.numel() else 0.0) * 1.05 or 1.0
    grid = torch.linspace(0.0, top, 400, dtype=torch.float64)
    curve = (radii[None, :] > grid[:, None]).double().mean(dim=1)
    fig, ax = new_figure(6, 4)
    ax.plot(grid.numpy(), curve.numpy(), color="tab:blue", label="certified accuracy")
    for e in eps:
        accuracy = float((radii > e).double().mean())
        ax.axvline(e, color="tab:gray", linestyle=":", linewidth=1)
        ax.plot([e], [accuracy], "o", color="tab:orange", markersize=4)
        ax.annotate(f"{accuracy:.3f} at {e:g}", (e, accuracy), textcoords="offset points",
                    xytext=(4, 6), fontsize="small")
    ax.set_xlabel("l2 radius (inputs in [0, 1])")
    ax.set_ylabel("certified accuracy")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def run_certify(args: argparse.Namespace) -> int:
    from lipcert.bounds import lipschitz_bound
    from lipcert.certify import certified_accuracy
    from lipcert.cli.attack_cmd import load_model_and_data
    from lipcert.report import format_table, save_figure

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
        title = (f"{args.recipe} ({Path(args.checkpoint).name}): certified accuracy on "
                 f"{args.data_name} {args.split}, {len(y)} points")
        print(f"wrote {save_figure(accuracy_curve(radii, args.eps, title), args.plot)}")
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
