"""``dipprior restore``: restore one image (DIP -> diffusion prior)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dipprior.cli.options import (
    HELP,
    add_dip,
    add_runtime,
    add_sampler,
    add_task,
    dip_config,
    load_prior,
    sampler_config,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "restore", help="restore one image (DIP -> diffusion prior)", formatter_class=HELP,
        description="Restore IMAGE, an observation (noisy image; image with holes plus --mask; "
        "low-resolution image), with DIP-initialised diffusion. With --simulate, IMAGE is a "
        "clean image that is degraded first (seeded) and the result is scored.")
    p.add_argument("image", metavar="IMAGE", help="the observation (or a clean image with "
                   "--simulate)")
    add_task(p)
    add_sampler(p, steps=50)
    add_dip(p, iterations=1000)
    p.add_argument("--mask", metavar="PNG", help="inpaint: mask image, white = known pixel")
    p.add_argument("--simulate", action="store_true",
                   help="IMAGE is clean: degrade it (--sigma/--keep/--factor) and report PSNR")
    p.add_argument("--init", default="dip", choices=["dip", "noise", "observation"],
                   help="start of the reverse chain")
    p.add_argument("--no-guidance", action="store_true", help="plain SDEdit, no data term")
    p.add_argument("--save-dip", metavar="PNG", help="also write the DIP image here")
    p.add_argument("--out", required=True, metavar="OUT.png", help="output image (atomic)")
    p.add_argument("--seed", type=int, default=0, help="degradation, DIP and noise seed")
    add_runtime(p)
    return p


def _check_output(path: str, flag: str) -> None:
    """Fail before any work when an output path cannot be written."""
    out = Path(path)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{flag}: {path!r} must end in .png, .jpg or .jpeg")
    if not out.parent.is_dir():
        raise ValueError(f"{flag}: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise ValueError(f"{flag}: {path!r} is a folder")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"{flag}: {path!r} is not writable")


def run(args: argparse.Namespace) -> int:
    from dipprior.experiments import degrade, make_task
    from dipprior.io import load_image, save_image
    from dipprior.metrics import evaluate
    from dipprior.operators import Inpaint, mask_from_image
    from dipprior.pipeline import DIPInitializedSampler

    _check_output(args.out, "--out")
    if args.save_dip:
        _check_output(args.save_dip, "--save-dip")
    config = sampler_config(args, init=args.init,
                            guidance=None if args.no_guidance else "proximal")
    dip = dip_config(args)
    image = load_image(args.image)
    clean = None
    if args.task == "inpaint" and args.mask:
        task = Inpaint(mask_from_image(args.mask))
    elif args.task == "inpaint" and not args.simulate:
        raise ValueError("--mask PNG is required to inpaint a real image (or use --simulate "
                         "to drop random pixels of a clean one)")
    else:
        task = make_task(args.task, sigma=args.sigma, keep=args.keep, factor=args.factor)
    if args.simulate:
        clean = image
        op, observation = degrade(clean, task, args.seed)
    else:
        op, observation = task, image
    model, scheduler = load_prior(args)
    sampler = DIPInitializedSampler(model, scheduler, config, dip=dip, device=args.device,
                                    progress=not args.no_progress)
    result = sampler(observation, op, seed=args.seed)
    save_image(result.image, args.out)
    if args.save_dip and result.dip_image is not None:
        save_image(result.dip_image.clamp(0, 1), args.save_dip)
    line = (f"wrote {args.out}: t0={result.t0}, NFE={result.nfe}, seconds DIP "
            f"{result.seconds['dip']:.1f} + diffusion {result.seconds['diffusion']:.1f}")
    if clean is not None:
        m = evaluate(result.image, clean)
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
        if result.dip_image is not None:
            line += f" (DIP alone {evaluate(result.dip_image, clean)['psnr']:.2f} dB)"
    print(line)
    return 0
