"""Tune the classical start's t0 and steps on held-out CBSD432 crops (never the test sets).

The validation photos are the 16 CBSD432 photos the shipped prior never trained on: every 27th
in sorted order (``docs/pretrained.md``).  Image i is degraded with seed i; each chain is seeded
with i.  For each task, the classical restoration (biharmonic, bicubic) is handed to the
noise-free chain (zeta 1, no second observation) at every ``--t0`` and ``--steps``; DiffPIR from
noise (the ``DDPM`` preset) and the classical image itself are scored for reference.  The
classical image reaches the chain as ``dip_image`` (``init="dip"``, no second observation unless
``--fields`` asks), which is what ``init="classical"`` runs; ``--fields '{"samples": 4}'`` averages
chains as the default does.  Seconds are the chain's alone.  The clean crop only scores.

    python docs/notes/scripts/tune_classical_start.py --data ../shared/data/train/CBSD432 \\
        --tasks inpaint,box,sr --n-images 6 --out docs/results/start/tuning/classical_grid.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dipprior import metrics
from dipprior.diffusion import load_pretrained
from dipprior.experiments.data import degrade
from dipprior.io import IMAGE_SUFFIXES, center_crop, load_image
from dipprior.operators import classical_start, make_task
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig
from dipprior.pipeline.presets import method_configs


def validation_crops(folder: str, n: int, size: int) -> dict[str, torch.Tensor]:
    """The first ``n`` of the 16 held-out CBSD432 photos (every 27th in sorted order)."""
    if n < 1:
        raise SystemExit(f"--n-images: at least 1, got {n}")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    held_out = paths[13::27][:n]
    if not held_out:
        raise SystemExit(f"--data: {folder} holds {len(paths)} images; the held-out photos are "
                         "every 27th from the 14th, so give the CBSD432 training folder (432)")
    return {p.stem: center_crop(load_image(p), size) for p in held_out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CBSD432 folder")
    p.add_argument("--tasks", default="inpaint,box,sr")
    p.add_argument("--n-images", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--t0", default="50,100,150,200,300,400")
    p.add_argument("--steps", default="25")
    p.add_argument("--zeta", default="1.0", help="DiffPIR's fresh-noise fractions to try")
    p.add_argument("--fields", default="{}",
                   help="JSON: more SamplerConfig fields of the chain (e.g. dip_observation)")
    p.add_argument("--no-ddpm", action="store_true", help="skip DiffPIR from noise")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="JSON lines, appended")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    crops = validation_crops(args.data, args.n_images, args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = json.loads(args.fields)
    base = SamplerConfig(init="dip", steps=25, zeta=1.0).replace(**fields)

    def emit(row: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row["task"], row["label"], row["mean"], flush=True)

    for task in args.tasks.split(","):
        factory = make_task(task)
        cases = [(name, clean, *degrade(clean, factory, i))
                 for i, (name, clean) in enumerate(crops.items())]
        starts, secs = [], []
        for _, _, op, y in cases:
            began = time.perf_counter()
            starts.append(classical_start(y, op))
            secs.append(time.perf_counter() - began)
        psnr = [metrics.psnr(s.clamp(0, 1), case[1])
                for s, case in zip(starts, cases, strict=True)]
        emit({"task": task, "label": "classical", "psnr": psnr, "seconds": secs,
              "mean": round(sum(psnr) / len(psnr), 3)})
        if not args.no_ddpm:
            sampler = DIPInitializedSampler(model, scheduler, method_configs(task)["DDPM"],
                                            progress=False)
            scores, secs = [], []
            for i, (_, clean, op, y) in enumerate(cases):
                began = time.perf_counter()
                r = sampler(y, op, seed=i)
                secs.append(time.perf_counter() - began)
                scores.append(metrics.psnr(r.image, clean))
            emit({"task": task, "label": "DDPM", "psnr": scores, "seconds": secs,
                  "mean": round(sum(scores) / len(scores), 3)})
        grid = [(int(s), int(t), float(z)) for s in args.steps.split(",")
                for t in args.t0.split(",") for z in args.zeta.split(",")]
        for steps, t0, zeta in grid:
            sampler = DIPInitializedSampler(model, scheduler, base.replace(
                t0=t0, steps=steps, zeta=zeta), progress=False)
            scores, secs = [], []
            for i, ((_, clean, op, y), start) in enumerate(zip(cases, starts, strict=True)):
                began = time.perf_counter()
                image = sampler(y, op, seed=i, dip_image=start).image  # start: the classical
                secs.append(time.perf_counter() - began)
                scores.append(metrics.psnr(image, clean))
            label = f"classical t0={t0} steps={steps}" + (f" {fields}" if fields else "") + (
                f" zeta={zeta:g}" if zeta != 1.0 else "")
            emit({"task": task, "label": label, "t0": t0, "steps": steps, "zeta": zeta,
                  "psnr": [round(s, 3) for s in scores], "seconds": secs,
                  "mean": round(sum(scores) / len(scores), 3)})


if __name__ == "__main__":
    main()
