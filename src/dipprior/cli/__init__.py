"""The ``dipprior`` command line: ``train``, ``restore``, ``compare`` and ``demo``.

Each sub-command lives in its own module with an ``add_parser(subparsers)`` function and a
``run(args)`` handler.  :func:`main` is the one error guard: a user error (bad value, missing
file) prints ``dipprior <command>: error: ...`` and exits 2, a failure while running (out of
memory, disk, numerical blow-up) exits 1, and only ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from dipprior import __version__
from dipprior.cli import compare, demo, restore, train
from dipprior.cli.options import HELP

__all__ = ["build_parser", "main"]

_COMMANDS = (train, restore, compare, demo)
# exceptions that mean "the input was wrong" (exit 2) and "running failed" (exit 1)
_USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                 PermissionError)
# our argument checks name what they refuse first: "sigma: expected ...", "--kernel: ..."
_NAMES_ITS_INPUT = re.compile(r"^-{0,2}[A-Za-z_][\w.\[\]-]*: ")
_RUN_ERRORS = (OSError, RuntimeError, MemoryError, ArithmeticError, ImportError, LookupError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dipprior",
        description="Deep Image Prior initialisation for fast diffusion-based image restoration.",
        formatter_class=HELP)
    parser.add_argument("--version", action="version", version=f"dipprior {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        p = command.add_parser(subparsers)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a command is required: usage, as argparse does
        parser.print_help(sys.stderr)
        return 2
    try:
        _set_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"dipprior {args.command}: interrupted", file=sys.stderr)
        return 130
    except (*_USAGE_ERRORS, *_RUN_ERRORS) as exc:
        if args.debug:
            raise
        code = 2 if isinstance(exc, _USAGE_ERRORS) else 1
        message = str(exc) or type(exc).__name__
        if isinstance(exc, TypeError) and not _NAMES_ITS_INPUT.match(message):
            # a TypeError that names no argument is a bug of ours, not a usage error
            print(f"dipprior {args.command}: internal error ({type(exc).__name__}: {message}); "
                  "run again with --debug for the traceback and report it", file=sys.stderr)
            return 1
        if isinstance(exc, MemoryError):
            message = "out of memory" + (f" ({exc})" if str(exc) else "")
        print(f"dipprior {args.command}: error: {message}", file=sys.stderr)
        return code


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
