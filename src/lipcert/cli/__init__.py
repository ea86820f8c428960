"""The ``lipcert`` command: a thin shell over the library.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import lipcert
from lipcert.cli._common import add_table_flag
from lipcert.cli._threads import add_threads_flag, apply_threads
from lipcert.errors import LipcertError, error_text

# Modules under lipcert.cli, in the order their commands appear in --help.
COMMAND_MODULES = (
    "lipcert.cli.data_cmd",
    "lipcert.cli.train_cmd",
    "lipcert.cli.attack_cmd",
    "lipcert.cli.audit_cmd",
    "lipcert.cli.bound_cmd",
    "lipcert.cli.certify_cmd",
    "lipcert.cli.smooth_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipcert",
        description="Lipschitz-certified robustness for PyTorch: bounds, certificates, attacks.",
    )
    parser.add_argument("--version", action="version", version=f"lipcert {lipcert.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for command in _leaf_parsers(parser):
        add_threads_flag(command)
        add_table_flag(command)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every command that runs (``data show``, not ``data``)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    return [leaf for group in groups for child in dict.fromkeys(group.choices.values())
            for leaf in _leaf_parsers(child)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lipcert`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from lipcert.cli._common import writes_to_stdout
    from lipcert.report import messages_to_stderr

    try:
        apply_threads(args.threads)
        if writes_to_stdout(args):
            with messages_to_stderr():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except LipcertError as err:
        print(f"lipcert: error: {error_text(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # a file or folder the command reads or writes
        where = f" {err.filename}" if err.filename else ""
        print(f"lipcert: error: cannot access{where}: {err.strerror or err}; check the path "
              "and its permissions.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lipcert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
