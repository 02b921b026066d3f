"""Tune the deblurring chains on held-out CBSD432 crops (never the test sets).

For one blur (noise 0.01 on [0, 1]) on the first ``--n-images`` of the 16 CBSD432 photos the
prior never trained on (128x128, image i degraded and seeded with i): DiffPIR from noise (100
steps) over ``--lams`` x ``--zetas``, and the classical (Wiener) start, 25 steps, over ``--t0s`` x
``--lams`` x ``--zetas``.  Mean PSNR and seconds per setting, one JSON line each; the clean crop
only scores.

    python docs/notes/scripts/tune_deblur.py --data ../shared/data/train/CBSD432 \\
        --blur gaussian:2 --out docs/results/deblur/tuning/chains.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from tune_classical_start import validation_crops  # (this folder is on sys.path)

from dipprior import metrics
from dipprior.diffusion import load_pretrained
from dipprior.experiments.data import degrade
from dipprior.operators import make_task
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--blur", required=True)
    p.add_argument("--n-images", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--lams", default="7,40")
    p.add_argument("--zetas", default="0.3,1.0")
    p.add_argument("--t0s", default="100,200")
    p.add_argument("--skip-ddpm", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    crops = validation_crops(args.data, args.n_images, args.size)
    factory = make_task("deblur", blur=args.blur)
    cases = [(clean, *degrade(clean, factory, i)) for i, clean in enumerate(crops.values())]
    lams = [float(v) for v in args.lams.split(",")]
    zetas = [float(v) for v in args.zetas.split(",")]
    grid = [] if args.skip_ddpm else [
        (f"DiffPIR lam={lam:g} zeta={zeta:g}",
         SamplerConfig(init="noise", steps=100, lam=lam, zeta=zeta))
        for lam, zeta in itertools.product(lams, zetas)]
    grid += [(f"Classical t0={t0} lam={lam:g} zeta={zeta:g}",
              SamplerConfig(init="classical", t0=int(t0), steps=25, lam=lam, zeta=zeta))
             for t0, lam, zeta in itertools.product(args.t0s.split(","), lams, zetas)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for label, config in grid:
        sampler = DIPInitializedSampler(model, scheduler, config, progress=False)
        began = time.perf_counter()
        psnrs = [float(metrics.psnr(sampler(y, op, seed=i).image.clamp(0, 1), clean))
                 for i, (clean, op, y) in enumerate(cases)]
        row = {"blur": args.blur, "label": label, "mean": round(sum(psnrs) / len(psnrs), 3),
               "psnr": [round(v, 3) for v in psnrs],
               "seconds": round((time.perf_counter() - began) / len(cases), 2)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row["blur"], label, row["mean"], row["seconds"], flush=True)


if __name__ == "__main__":
    main()
