"""``lipcert audit CHECKPOINT``: certify every point with its Lipschitz bound, then attack each
certified point inside its certified ball (:func:`lipcert.attacks.audit`)."""

from __future__ import annotations

import argparse
import warnings

import torch

from lipcert.cli._common import add_data_flags, add_plot_flag, check_int, run_title, write_results
from lipcert.cli.attack_cmd import load_model_and_data
from lipcert.report import new_figure, save_figure


def register(subparsers) -> None:
    from lipcert.attacks.minimal import METHODS

    audit = subparsers.add_parser(
        "audit", help="try to break every Lipschitz certificate of a checkpoint",
        description="Certify each point with lipcert.certify.lipschitz_radii, then attack it "
        "with l2 PGD just inside its certified radius and with the minimal-distance attacks. "
        "Prints the number of violations (broken certificates: exit status 1) and the "
        "tightness ratio minimal-adversarial-distance / certified-radius.",
    )
    add_data_flags(audit, batch_size=64)
    audit.add_argument("--steps", type=int, default=100, metavar="N",
                       help="PGD iterations (default 100)")
    audit.add_argument("--minimal", choices=METHODS, default="deepfool+cw",
                       help="minimal-distance attack (default deepfool+cw: DeepFool, then "
                       "Carlini-Wagner started at its point; best: DeepFool and a 9-round "
                       "Carlini-Wagner search from the input; the audit takes 4-5 times as "
                       "long)")
    audit.add_argument("--seed", type=int, default=0, help="seed of the random starts "
                       "(default 0)")
    add_plot_flag(audit, "a histogram of the tightness ratios")
    audit.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from lipcert.attacks import audit
    from lipcert.attacks.audit import CertificateViolationWarning
    from lipcert.bounds import lipschitz_bound
    from lipcert.certify import lipschitz_radii

    check_int(args, "steps", 0)
    model, x, y = load_model_and_data(args)
    bound = lipschitz_bound(model, x[:1])
    size = args.batch_size
    radii = torch.cat([lipschitz_radii(model, x[i : i + size], y[i : i + size], bound=bound)
                       for i in range(0, len(y), size)])
    report = audit(model, x, y, radii, pgd_steps=args.steps, minimal_method=args.minimal,
                   seed=args.seed, batch_size=size, warn=False, progress=args.progress)
    print(f"Lipschitz bound {float(bound):.4g} ({bound.guarantee}); {report.num_certified} of "
          f"{len(y)} points certified at a positive radius")
    print(report)
    if args.plot:
        figure = tightness_histogram(report.tightness,
                                     run_title(args, "certificate tightness", len(y)))
        print(f"wrote {save_figure(figure, args.plot)}")
    if args.json:
        write_results(args, {"checkpoint": args.checkpoint, **report.summary()})
    if report.violations:
        warnings.warn(str(report), CertificateViolationWarning, stacklevel=2)
    report.raise_if_violated()
    return 0


def tightness_histogram(tightness: torch.Tensor, title: str):
    """Histogram figure of the finite tightness ratios, with the soundness line at 1, under
    ``title`` (the run) and a subtitle with the count."""
    fig, ax = new_figure(6, 4)
    finite = tightness[torch.isfinite(tightness)].double().cpu().numpy()
    if len(finite):
        ax.hist(finite, bins=min(40, max(5, len(finite) // 3)), color="tab:blue",
                label="certified points")
    else:
        ax.text(0.5, 0.5, "no certified point was broken by an attack:\nno finite ratio",
                ha="center", va="center", transform=ax.transAxes)
    ax.axvline(1.0, color="tab:red", linestyle="--", label="ratio 1 (below: certificate broken)")
    ax.set_xlim(left=0)
    ax.set_xlabel("minimal adversarial distance / certified radius")
    ax.set_ylabel("number of points")
    ax.set_title(f"{title}\n{len(finite)} certified points with an adversarial example",
                 fontsize="medium")
    ax.legend(fontsize="small")
    return fig
