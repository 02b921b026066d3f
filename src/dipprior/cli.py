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


def _add_restoration_options(p: argparse.ArgumentParser) -> None:
    """Task, prior, sampler and DIP options shared by ``restore`` and ``compare``."""
    p.add_argument("--task", required=True, choices=["denoise", "inpaint", "sr"])
    p.add_argument("--sigma", type=float, default=25.0, help="denoise: noise std, 0..255 units")
    p.add_argument("--keep", type=float, default=0.5,
                   help="inpaint (simulated): fraction of pixels kept (default 0.5)")
    p.add_argument("--factor", type=int, default=4, help="sr: down-sampling factor (default 4)")
    p.add_argument("--model", metavar="DIR",
                   help="diffusion prior checkpoint directory (from `dipprior train`); "
                   "default: the shipped prior (dipprior.diffusion.load_pretrained())")
    p.add_argument("--t0", default="auto",
                   help="start timestep: int, strength in (0, 1] (e.g. 0.05) or auto")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    p.add_argument("--guidance-scale", type=float, default=10.0,
                   help="DiffPIR lambda (default 10)")
    p.add_argument("--renoise", choices=["auto", "full", "missing"], default="auto",
                   help="DIP start: add the full forward noise of t0, or only what the DIP "
                   "image's estimated error leaves missing (default auto: missing for noisy "
                   "observations)")
    p.add_argument("--dip-iterations", type=int, default=1000, help="DIP budget (default 1000)")
    p.add_argument("--dip-channels", type=int, default=64, help="DIP channels per scale")
    p.add_argument("--early-stopping", choices=["wmv", "discrepancy"],
                   help="DIP early stopping rule (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_restore(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore", help="restore one image (DIP -> diffusion prior)",
        description="Restore IMAGE, an observation (noisy image; image with holes plus --mask; "
        "low-resolution image), with DIP-initialised diffusion. With --simulate, IMAGE is a "
        "clean image that is degraded first (seeded) and the result is scored.")
    p.add_argument("image", metavar="IMAGE")
    _add_restoration_options(p)
    p.add_argument("--mask", metavar="PNG", help="inpaint: mask image, white = known pixel")
    p.add_argument("--simulate", action="store_true",
                   help="IMAGE is clean: degrade it (--sigma/--keep/--factor) and report PSNR")
    p.add_argument("--init", default="dip", choices=["dip", "noise", "observation"])
    p.add_argument("--steps", type=int, default=50, help="reverse steps = NFE (default 50)")
    p.add_argument("--no-guidance", action="store_true", help="plain SDEdit, no data term")
    p.add_argument("--save-dip", metavar="PNG", help="also write the DIP image here")
    p.add_argument("--out", required=True, metavar="OUT.png", help="output image (atomic)")
    p.set_defaults(func=_run_restore)


def _run_restore(args: argparse.Namespace) -> int:
    from dipprior.experiments import run_restore

    return run_restore(args)


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="compare DIP, DDPM, DIP->DDPM (and CBM3D) over a folder of images",
        description="Degrade center crops of the images in FOLDER (seeded), restore them with "
        "each method and write per-image and average tables (Markdown, CSV) to --out. Under "
        "`torchrun --nproc_per_node N` the images are split over N processes.")
    p.add_argument("folder", metavar="FOLDER")
    _add_restoration_options(p)
    p.add_argument("--n-images", type=int, help="first N images in sorted order (default all)")
    p.add_argument("--size", type=int, default=128, help="center crop side (default 128)")
    p.add_argument("--steps", type=int, default=10, help="warm-start steps (default 10)")
    p.add_argument("--ddpm-steps", type=int, default=100, help="DDPM-only steps (default 100)")
    p.add_argument("--no-cbm3d", action="store_true", help="skip CBM3D even if installed")
    p.add_argument("--dip-cache", metavar="DIR", help="keep DIP fits here across runs")
    p.add_argument("--out", metavar="DIR", help="write compare_<task>.md/.csv here")
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from dipprior.experiments import run_compare

    return run_compare(args)


_SUBCOMMANDS.extend([_add_restore, _add_compare])


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job, offline: DIP vs DDPM vs DIP->DDPM on bundled photos",
        description="Degrade center crops of scikit-image's bundled photos (seeded), restore "
        "them with DIP alone, DDPM alone and DIP->DDPM using the shipped prior, print the "
        "tables (PSNR, SSIM, MSE, MAE, Delta E, NFE, seconds) and write results.csv, "
        "results.md and the comparison figure demo.png to --out. Defaults take a few minutes "
        "on 2 CPU cores; --quick about one.")
    p.add_argument("--task", choices=["denoise", "inpaint", "sr"], help="default denoise")
    p.add_argument("--out", default="dipprior-demo", metavar="DIR",
                   help="output folder (default dipprior-demo)")
    p.add_argument("--quick", action="store_true", help="2 images, 64x64, short budgets")
    p.add_argument("--images", nargs="+", metavar="NAME",
                   help="sample image names (default astronaut chelsea motorcycle)")
    p.add_argument("--size", type=int, help="center crop side (default 96)")
    p.add_argument("--sigma", type=float, help="denoise: noise std in 0..255 (default 25)")
    p.add_argument("--keep", type=float, help="inpaint: fraction of pixels kept (default 0.5)")
    p.add_argument("--factor", type=int, help="sr: down-sampling factor (default 4)")
    p.add_argument("--dip-iterations", type=int, help="DIP iterations (default 600)")
    p.add_argument("--dip-channels", type=int, help="DIP channels per scale (default 64)")
    p.add_argument("--ddpm-steps", type=int, help="DDPM-from-noise steps (default 100)")
    p.add_argument("--steps", type=int, help="DIP->DDPM reverse steps (default 10)")
    p.add_argument("--t0", help="DIP->DDPM start: int, strength in (0, 1] or auto (default)")
    p.add_argument("--eta", type=float, help="DDIM eta (default 0)")
    p.add_argument("--seed", type=int, help="seed of the first image (default 0)")
    p.add_argument("--model", metavar="DIR", help="prior checkpoint (default: the shipped one)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dipprior.demo import run_cli

    return run_cli(args)


_SUBCOMMANDS.append(_add_demo)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
