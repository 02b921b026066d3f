"""``dipprior compare``: the classical peer, DIP, DDPM and the warm starts over a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from dipprior.cli import options
from dipprior.cli.options import HELP, add_dip, add_runtime, add_sampler, add_task


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare the classical peer (biharmonic, bicubic, CBM3D), DIP, DDPM and "
        "the warm starts over a folder of images",
        formatter_class=HELP,
        description="Degrade center crops of the images in FOLDER (seeded), restore them with "
        "each method and write per-image and average tables (Markdown, CSV) to --out. Under "
        "`torchrun --nproc_per_node N` the images are split over N processes.")
    p.add_argument("folder", metavar="FOLDER", help="folder of clean images")
    add_task(p)
    add_sampler(p)
    add_dip(p)
    p.add_argument("--n-images", type=int, help="first N images in sorted order (default all)")
    p.add_argument("--size", type=int, default=128, help="center crop side")
    p.add_argument("--ddpm-steps", type=int,
                   help="DDPM-only steps (default: the task's preset, 100)")
    p.add_argument("--no-cbm3d", action="store_true", help="skip CBM3D even if installed")
    p.add_argument("--no-classical", action="store_true",
                   help="skip the classical peer (biharmonic for holes, bicubic for sr)")
    p.add_argument("--dip-cache", metavar="DIR", help="keep DIP fits here across runs")
    p.add_argument("--out", metavar="DIR", help="write compare_<task>.md/.csv here")
    p.add_argument("--seed", type=int, default=0, help="degradation, DIP and noise seed")
    add_runtime(p)
    return p




def run(args: argparse.Namespace) -> int:
    from dipprior._atomic import atomic_write_text
    from dipprior.experiments import compare, init_distributed, load_folder, standard_methods
    from dipprior.metrics import SSIM_MIN_SIZE
    from dipprior.operators import make_task
    from dipprior.operators.registry import get_task

    options.check_output_folder(args.out, "--out")
    options.check_output_folder(args.dip_cache, "--dip-cache")
    if args.size is not None and args.size < SSIM_MIN_SIZE:
        raise ValueError(f"--size: expected at least {SSIM_MIN_SIZE} (SSIM's 11x11 window), got "
                         f"{args.size}")
    try:  # a motion --blur draws a fresh kernel per image (image i from --seed + i)
        operator = make_task(args.task, **options.task_params(args))
    except (ValueError, TypeError, OSError) as exc:
        raise options.in_user_terms(exc, get_task(args.task)) from None
    rank, _ = init_distributed()
    images = load_folder(args.folder, args.n_images, args.size)
    settings = options.sampler_fields(args)
    dip = {k: v for k, v in {"iterations": args.dip_iterations, "channels": args.dip_channels,
                             "early_stopping": args.early_stopping}.items() if v is not None}
    methods = standard_methods(*options.load_prior(args), settings=settings,
                               ddpm_steps=args.ddpm_steps,
                               dip={**dip, "device": args.device} if dip else None,
                               cbm3d=not args.no_cbm3d, classical=not args.no_classical,
                               task=args.task, device=args.device)
    table = compare(images, operator, methods, seed=args.seed, dip_cache=args.dip_cache,
                    progress=not args.no_progress)
    if rank == 0:
        print(table.to_markdown())
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / f"compare_{args.task}.md", table.to_markdown())
            table.to_csv(out / f"compare_{args.task}.csv")
            print(f"wrote {out / f'compare_{args.task}.md'} and .csv")
    return 0
