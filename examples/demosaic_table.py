"""Demosaicing (Bayer RGGB): the default sampler against bilinear, Malvar 2004, Menon 2007 and
DiffPIR from noise, with seconds; ``--tune`` chooses the classical start's ``t0`` instead.

Centre crops of the first N images of a folder; the observation is noise-free (or noisy with
``--sigma``).  Every number comes from the task registry's ``demosaic`` operator, so the
sampler's rows equal ``DIPInitializedSampler(model, scheduler)(y, op, seed=seed + i)``:

    python examples/demosaic_table.py --data ../shared/data/train/CBSD432 --tune 50 100 200 \\
        --n-images 4                                                   # settings (training)
    python examples/demosaic_table.py --data ../shared/data/test/Kodak24 --n-images 24 \\
        --out runs/demosaic/kodak24                                    # the table (test set)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dipprior._atomic import atomic_write_text
from dipprior.diffusion import load_pretrained
from dipprior.experiments import compare, load_folder
from dipprior.operators import Demosaic, demosaicing, make_task
from dipprior.pipeline import DIPInitializedSampler


def peer(method: str):
    def run(y: torch.Tensor, op: Demosaic, seed: int = 0) -> torch.Tensor:
        return demosaicing(y, op, method).clamp(0, 1)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of images")
    p.add_argument("--n-images", type=int, default=24)
    p.add_argument("--size", type=int, default=128, help="centre crop side")
    p.add_argument("--sigma", type=float, default=0.0, help="noise std, 0..255 units")
    p.add_argument("--seed", type=int, default=0, help="image i is seeded with seed + i")
    p.add_argument("--tune", type=int, nargs="+", metavar="T0",
                   help="score the default chain from Menon 2007 at these t0 instead")
    p.add_argument("--no-diffpir", action="store_true", help="leave DiffPIR from noise out")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="folder for demosaic.md / .csv")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained(device="cpu")
    images = load_folder(args.data, args.n_images, args.size)
    operator = make_task("demosaic", cfa_sigma=args.sigma)
    methods: dict = {}
    if args.tune:
        for t0 in args.tune:
            methods[f"t0={t0}"] = DIPInitializedSampler(model, scheduler, t0=t0, progress=False)
    else:
        methods = {"Bilinear": peer("bilinear"), "Malvar 2004": peer("malvar2004"),
                   "Menon 2007": peer("menon2007")}
        if not args.no_diffpir:
            methods["DiffPIR (noise)"] = DIPInitializedSampler(model, scheduler, init="noise",
                                                               progress=False)
        methods["Default"] = DIPInitializedSampler(model, scheduler, progress=False)
    began = time.perf_counter()
    table = compare(images, operator, methods, seed=args.seed, progress=True)
    averages = [r for r in table.rows if r["Image"] == "Average"]
    lines = [f"# Demosaicing, Bayer RGGB, sigma {args.sigma:g}: {Path(args.data).name}, "
             f"{len(images)} crops of {args.size}, seeds {args.seed} + i "
             f"({time.perf_counter() - began:.0f} s)", "",
             "| Method | PSNR | SSIM | Delta E | NFE | Seconds |", "|---|---|---|---|---|---|"]
    for r in averages:
        lines.append(f"| {r['Method']} | {r['PSNR']:.2f} | {r['SSIM']:.4f} | "
                     f"{r['Delta E']:.3f} | {r['NFE']:.0f} | {r['Seconds']:.2f} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "demosaic.md", "\n".join(lines) + "\n\n" + table.to_markdown())
        table.to_csv(out / "demosaic.csv")


if __name__ == "__main__":
    main()
