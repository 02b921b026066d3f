"""The ``dipprior`` command line.

Each sub-command registers itself through one ``_add_<name>`` function below; the heavy imports
happen inside the handlers so that ``dipprior --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dipprior import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dipprior",
        description="Deep Image Prior initialisation for fast diffusion-based image restoration.",
    )
    parser.add_argument("--version", action="version", version=f"dipprior {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


# Sub-command registrars: each takes the subparsers object, adds its parser and sets
# ``func`` (a callable taking the parsed namespace and returning an exit code).
_SUBCOMMANDS: list = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
