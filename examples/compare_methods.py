"""Compare DIP, DDPM (from noise), DIP->DDPM, Observation->DDPM and CBM3D on held-out images.

Center crops of the first N images of a folder (sorted by name) are degraded with seed + i
(denoising: Gaussian noise in float, no clipping; inpainting: a fresh random pixel mask per
image) and restored by every method.  Writes, per task, ``compare_<task>.md`` / ``.csv`` (per
image and averages) and ``summary_<task>.md`` (the paired PSNR margins) to ``--out``:

    python examples/compare_methods.py --data ../shared/data/test/CBSD68 --n-images 8 \\
        --size 128 --tasks denoise inpaint --dip-iterations 1000 --steps 10 --ddpm-steps 100 \\
        --seed 0 --out results --dip-cache results/dip-cache

``--model`` defaults to the shipped prior and ``--out`` to ``runs/compare`` (git-ignored).
CBM3D runs when the optional ``bm3d`` package is installed (otherwise its rows are skipped, with
a line saying so).  ``--quick`` shrinks everything for a smoke test.  Under
``torchrun --nproc_per_node N`` the images are split over N processes; rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import torch

from dipprior import experiments as ex
from dipprior._atomic import atomic_write_text
from dipprior._tensor import default_device
from dipprior.diffusion import load_pretrained
from dipprior.dip import DIPConfig
from dipprior.operators import make_task  # noqa: E402
from dipprior.pipeline import SamplerConfig, parse_t0

CBM3D_SKIPPED = ("CBM3D rows skipped: the optional bm3d package is not installed "
                 "(pip install bm3d)")


def parse_args(doc: str = __doc__, extra=None) -> argparse.Namespace:
    """The options shared by the example scripts; ``extra(parser)`` adds a script's own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", default=None,
                   help="prior: a shipped name or a checkpoint folder (default: the shipped one)")
    p.add_argument("--data", required=True, help="folder of held-out test images")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="center crop side")
    p.add_argument("--tasks", nargs="+", default=["denoise", "inpaint"],
                   choices=["denoise", "inpaint", "sr"])
    p.add_argument("--sigma", type=float, default=25.0, help="denoising noise, 0..255 units")
    p.add_argument("--keep", type=float, default=0.5, help="inpainting: fraction kept")
    p.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    p.add_argument("--dip-iterations", type=int, default=1000)
    p.add_argument("--dip-channels", type=int, default=64)
    p.add_argument("--early-stopping", choices=["wmv", "discrepancy"],
                   help="DIP early stopping rule (default: none, run all iterations)")
    p.add_argument("--steps", type=int, default=10, help="warm-start reverse steps")
    p.add_argument("--ddpm-steps", type=int, default=100, help="DDPM-only reverse steps")
    p.add_argument("--t0", default="auto", help="int, strength or auto")
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--zeta", type=float, default=None, help="DiffPIR fresh-noise fraction")
    p.add_argument("--spacing", choices=["uniform", "quadratic"], default="uniform")
    p.add_argument("--lam", type=float, default=40.0,
                   help="DiffPIR lambda (official code's scale; 40 = the old guidance_scale 10)")
    p.add_argument("--renoise", choices=["auto", "full", "missing"], default="auto")
    p.add_argument("--no-cbm3d", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--dip-cache", default=None, help="folder for DIP fits shared across runs")
    p.add_argument("--quick", action="store_true", help="2 tiny images, short runs")
    if extra is None:
        p.add_argument("--methods", nargs="+", metavar="NAME",
                       help="run only these of DIP, DDPM, DIP->DDPM, Observation->DDPM, CBM3D "
                       "(default: all)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick:
        args.n_images, args.size = 2, 32
        args.dip_iterations, args.dip_channels = 30, 16
        args.steps, args.ddpm_steps = 3, 10
    return args


def setup(args: argparse.Namespace):
    """Threads, process group, prior, images and DIP config shared by the example scripts."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rank, world = ex.init_distributed()
    model, scheduler = load_pretrained(args.model, device=default_device(args.device))
    images = ex.load_folder(args.data, args.n_images, args.size)
    dip = DIPConfig(iterations=args.dip_iterations, channels=args.dip_channels,
                    early_stopping=args.early_stopping, device=args.device,
                    progress=False)
    return rank, world, model, scheduler, images, dip


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    """The warm-start sampler settings of the options (``--steps``, ``--t0``, ``--eta``,
    ``--zeta``, ``--spacing``, ``--lam``, ``--renoise``); experiments replace fields such as
    steps or t0."""
    return SamplerConfig(steps=args.steps, t0=parse_t0(args.t0), eta=args.eta, zeta=args.zeta,
                         spacing=args.spacing, lam=args.lam, renoise=args.renoise)


def header(args: argparse.Namespace, world: int) -> str:
    import json

    folder = Path(args.model) if args.model and Path(args.model).is_dir() else (
        Path(str(resources.files("dipprior"))) / "weights" / (args.model or "cbsd432-small"))
    config = folder / "config.json"
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    step = cfg.get("step", "?")  # written by `dipprior train`
    return (f"prior {args.model or folder.name} (training step {step}; model "
            f"{json.dumps(cfg.get('model'))}); data {args.data}, first {args.n_images} images "
            f"sorted, {args.size}x{args.size} center crops; seed {args.seed}; "
            f"{world} process(es), torch threads {torch.get_num_threads()}")


def write(out: Path, name: str, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / name, text)
    print(f"wrote {out / name}")


def main() -> None:
    args = parse_args()
    rank, world, model, scheduler, images, dip = setup(args)
    methods = ex.standard_methods(model, scheduler, sampler=sampler_config(args),
                                  ddpm_steps=args.ddpm_steps, dip=dip,
                                  cbm3d=not args.no_cbm3d, device=args.device)
    if "denoise" in args.tasks and not args.no_cbm3d and "CBM3D" not in methods and rank == 0:
        print(CBM3D_SKIPPED)
    if args.methods:
        unknown = set(args.methods) - set(methods) - {"CBM3D"}
        if unknown:
            raise SystemExit(f"--methods: unknown {sorted(unknown)}; choose from {list(methods)}")
        methods = {k: v for k, v in methods.items() if k in args.methods}
    out = Path(args.out)
    for task in args.tasks:
        start = time.perf_counter()
        operator = make_task(task, sigma=args.sigma, keep=args.keep, factor=args.factor)
        table = ex.compare(images, operator, methods, seed=args.seed, dip_cache=args.dip_cache,
                           progress=rank == 0)
        if rank != 0:
            continue
        stopping = f" (stopping: {args.early_stopping})" if args.early_stopping else ""
        lines = [f"# {task}: {header(args, world)}",
                 f"DIP: {args.dip_channels} channels, {args.dip_iterations} iterations"
                 f"{stopping}; warm starts: {args.steps} "
                 f"steps from t0={args.t0}; DDPM: {args.ddpm_steps} steps from T-1; eta "
                 f"{args.eta}, zeta {args.zeta}, {args.spacing} spacing, lambda {args.lam}, "
                 f"renoise {args.renoise}; "
                 f"wall "
                 f"{time.perf_counter() - start:.0f} s", ""]
        for a, b in (("DIP->DDPM", "DIP"), ("DIP->DDPM", "DDPM"), ("DIP->DDPM", "CBM3D"),
                     ("DIP->DDPM", "Observation->DDPM")):
            try:
                d = ex.paired_difference(table, a, b)
            except ValueError:
                continue
            per = ", ".join(f"{k} {v:+.2f}" for k, v in d["per_image"].items())
            lines.append(f"- PSNR {a} - {b}: mean {d['mean']:+.2f} dB (min {d['min']:+.2f}, "
                         f"max {d['max']:+.2f}; better on {d['wins']}/{d['images']}): {per}")
        summary = "\n".join(lines) + "\n"
        print(summary)
        print(table.to_markdown())
        write(out, f"compare_{task}.md", summary + "\n" + table.to_markdown())
        table.to_csv(out / f"compare_{task}.csv")
        write(out, f"summary_{task}.md", summary)


if __name__ == "__main__":
    main()
