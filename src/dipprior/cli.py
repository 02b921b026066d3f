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


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the diffusion prior on a folder of images",
        description="Train a diffusion prior (UNet + DDPM schedule) on random patches of the "
        "images in FOLDER. Checkpoints go to --out; if --out already holds one, training "
        "resumes from it exactly (architecture flags may then be omitted). Under `torchrun "
        "--nproc_per_node N` it trains data-parallel.")
    p.add_argument("folder", metavar="FOLDER", help="folder of PNG/JPEG training images")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=100_000, help="total steps (default 100000)")
    p.add_argument("--batch-size", type=int, default=16, help="per process (default 16)")
    p.add_argument("--patch-size", type=int, default=64, help="crop side (default 64)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--warmup", type=int, default=1000, help="linear LR warm-up steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm, 0 = off")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    arch = p.add_argument_group("architecture (default: from the checkpoint in --out, if any)")
    arch.add_argument("--base-channels", type=int, help="default 64")
    arch.add_argument("--channel-mults", help="comma list, default 1,2,2")
    arch.add_argument("--num-res-blocks", type=int, help="default 2")
    arch.add_argument("--attention-resolutions",
                      help="comma list of down-sampling factors (1,2,4...), default none")
    arch.add_argument("--dropout", type=float, help="default 0.1")
    arch.add_argument("--beta-schedule", choices=["linear", "scaled_linear", "cosine"],
                      help="default linear")
    arch.add_argument("--prediction-type", choices=["epsilon", "sample", "v_prediction"],
                      help="default epsilon")
    arch.add_argument("--num-train-timesteps", type=int, help="default 1000")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dipprior.diffusion.cli import run_train

    return run_train(args)


_SUBCOMMANDS.append(_add_train)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
