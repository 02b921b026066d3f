"""``dipprior demo``: the main job, offline: holes (and a denoising table) restored by the
classical peer, DiffPIR from noise, DIP, Classical->DDPM, DIP->DDPM and the default."""

from __future__ import annotations

import argparse
import dataclasses

from dipprior.cli.options import HELP, add_dtype, add_runtime, check_output_folder
from dipprior.operators import TASKS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from dipprior.demo import QUICK, DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="the main job, offline: holes and noise restored by the classical peer, "
        "DiffPIR from noise, DIP, Classical->DDPM, DIP->DDPM and the default",
        formatter_class=HELP,
        description="Degrade center crops of scikit-image's bundled photos (seeded): half the "
        "pixels missing, a centred hole and Gaussian noise by default. Restore them with the "
        "classical peer (biharmonic, bicubic, CBM3D when installed), DiffPIR from pure noise, "
        "DIP alone, Classical->DDPM (the classical restoration as start), DIP->DDPM and the "
        "library's default (marked), all with the shipped prior; print the tables (PSNR, SSIM, "
        "MSE, MAE, Delta E, NFE, seconds) and write results.csv, results.md, the figures "
        "demo.png (holes) and demo_<task>.png, and the restored images "
        "images/<task>/<image>_<method>.png to --out. Defaults take a few minutes on 2 CPU "
        "cores; --quick about one. Options left out take the defaults shown (or the --quick "
        "budget).")
    p.add_argument("--task", nargs="+", choices=list(TASKS),
                   help=f"the degradations, one table each (default: {' '.join(d.tasks)})")
    p.add_argument("--out", default="dipprior-demo", metavar="DIR", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help=f"about a minute: {' and '.join(QUICK['tasks'])}, "
                   f"{len(QUICK['images'])} image, {QUICK['size']}x{QUICK['size']}, "
                   f"DIP {QUICK['dip_iterations']} iterations, DiffPIR {QUICK['ddpm_steps']} "
                   f"steps, DIP->DDPM {QUICK['steps']} steps")
    p.add_argument("--images", nargs="+", metavar="NAME",
                   help=f"sample image names (default: {' '.join(d.images)})")
    p.add_argument("--size", type=int, help=f"center crop side (default: {d.size})")
    p.add_argument("--sigma", type=float,
                   help=f"denoise: noise std in 0..255 (default: {d.sigma:g})")
    p.add_argument("--keep", type=float,
                   help=f"inpaint: fraction of pixels kept (default: {d.keep:g})")
    p.add_argument("--box", type=int, help=f"box: side of the centred hole (default: {d.box})")
    p.add_argument("--factor", type=int, help=f"sr: down-sampling factor (default: {d.factor})")
    p.add_argument("--blur", metavar="SPEC",
                   help=f"deblur: gaussian:STD or motion:SIZE (default: {d.blur})")
    p.add_argument("--blur-sigma", type=float,
                   help=f"deblur: noise std in 0..255 (default: {d.blur_sigma:g})")
    p.add_argument("--dip-iterations", type=int,
                   help=f"DIP iterations (default: {d.dip_iterations})")
    p.add_argument("--dip-channels", type=int,
                   help=f"DIP channels per scale (default: {d.dip_channels})")
    p.add_argument("--ddpm-steps", type=int,
                   help=f"DDPM-from-noise steps (default: {d.ddpm_steps})")
    p.add_argument("--steps", type=int, help="DIP->DDPM reverse steps (default: the task's preset)")
    p.add_argument("--t0", help=f"DIP->DDPM start: int, strength in (0, 1] or auto "
                   f"(default: {d.t0})")
    p.add_argument("--eta", type=float, help=f"DDIM eta (default: {d.eta:g})")
    p.add_argument("--seed", type=int, help=f"seed of the first image (default: {d.seed})")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="a shipped prior's name, a checkpoint or diffusers folder, or a "
                   "guided-diffusion (ADM) .pt file (default: the shipped prior)")
    add_dtype(p)
    add_runtime(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dipprior.demo import QUICK, DemoConfig, run_demo
    from dipprior.metrics import SSIM_MIN_SIZE
    from dipprior.pipeline import parse_t0

    base = dataclasses.asdict(DemoConfig())
    if args.quick:
        base.update(QUICK)
    given = {"tasks": tuple(args.task) if args.task else None,
             "images": tuple(args.images) if args.images else None,
             "size": args.size, "sigma": args.sigma, "keep": args.keep, "factor": args.factor,
             "box": args.box, "blur": args.blur, "blur_sigma": args.blur_sigma,
             "dip_iterations": args.dip_iterations, "dip_channels": args.dip_channels,
             "ddpm_steps": args.ddpm_steps, "steps": args.steps, "eta": args.eta,
             "seed": args.seed, "t0": None if args.t0 is None else parse_t0(args.t0)}
    base.update({k: v for k, v in given.items() if v is not None})
    if "sr" in base["tasks"] and base["factor"] >= 1 and base["size"] % base["factor"]:
        smallest = base["factor"] * -(-SSIM_MIN_SIZE // base["factor"])
        if base["size"] < smallest:  # rounding down would leave too small a crop (or none)
            raise ValueError(f"--factor: {base['factor']} needs a --size of at least "
                             f"{smallest} (a multiple of the factor, and SSIM's "
                             f"{SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} window), got --size "
                             f"{base['size']}")
        base["size"] -= base["size"] % base["factor"]
    try:
        config = DemoConfig(**base)
    except ValueError as exc:  # DemoConfig names its fields: name the options instead
        field, sep, rest = str(exc).partition(": ")
        if sep and field in base:
            flag = "--task" if field == "tasks" else "--" + field.replace("_", "-")
            raise ValueError(f"{flag}: {rest}") from None
        raise
    check_output_folder(args.out, "--out")
    model = scheduler = None
    if args.model or args.dtype != "float32":
        from dipprior._tensor import default_device
        from dipprior.diffusion import load_pretrained

        model, scheduler = load_pretrained(args.model, device=default_device(args.device),
                                           dtype=args.dtype)
    run_demo(config, out=args.out, model=model, scheduler=scheduler, device=args.device,
             progress=not args.no_progress)
    return 0
