"""The prior adapted to each image (``SamplerConfig.adapt``) against the unadapted chain and the
classical peer, per test set: tune on held-out training crops, then run the test crops once.

Per crop (128x128 centre crops; image i degraded with seed ``--seed`` + i, its chains seeded the
same): Gaussian denoising -> CBM3D (the ``bm3d`` package, true sigma), the prior's one step (the
default) and the one step with each ``--adapt`` setting; 50% pixels and the 32x32 box -> the
biharmonic interpolation (the classical peer), the default chain (the biharmonic start, mean of 4
chains of 25 steps) and the same chain with each ``--adapt``.  The clean crop only scores.

    # tune (CBSD432's 16 held-out photos; extra photos held out the same way)
    python examples/adapt_table.py --data ../shared/data/train/CBSD432 --held-out \\
        --tasks denoise --n-images 4 --adapt '{"iterations": 20}' --out runs/adapt/tune.jsonl
    # test once
    python examples/adapt_table.py --data ../shared/data/test/Kodak24 --tasks denoise,inpaint \\
        --adapt '{"iterations": 20}' --out docs/results/adapt/kodak24.jsonl

``--adapt`` takes JSON objects of :class:`~dipprior.pipeline.adapt.AdaptConfig` fields separated
by ``;``.  Rows are appended to ``--out`` (JSON lines) and a summary is printed per task.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dipprior import metrics
from dipprior.diffusion import load_pretrained
from dipprior.experiments.data import degrade, load_folder
from dipprior.operators import classical_start, make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pipeline.presets import recommended_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--held-out", action="store_true", help="every 27th photo from the 14th")
    p.add_argument("--tasks", default="denoise,inpaint,box")
    p.add_argument("--sigma", type=float, default=25.0, help="denoising noise, 0..255")
    p.add_argument("--n-images", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adapt", default='{"iterations": 20}',
                   help="AdaptConfig fields as JSON objects separated by ';'")
    p.add_argument("--model", default="cbsd432-small")
    p.add_argument("--no-baselines", action="store_true", help="only the adapted runs")
    p.add_argument("--cbm3d-cache", default="runs/cbm3d-cache")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="JSON lines, appended")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained(args.model)
    images = load_folder(args.data, args.n_images, args.size, args.held_out)
    adapts = [AdaptConfig(**json.loads(a)) for a in args.adapt.split(";") if a.strip()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    cbm3d = None
    if "denoise" in args.tasks.split(",") and not args.no_baselines:
        try:
            import bm3d  # noqa: F401

            from dipprior.denoisers import cbm3d  # needs the optional bm3d package
        except ImportError:
            cbm3d = None
            print("CBM3D rows skipped: the optional bm3d package is not installed "
                  "(pip install bm3d)", flush=True)
    for task in args.tasks.split(","):
        factory = make_task(task, sigma=args.sigma)
        label = f"denoise s{args.sigma:g}" if task == "denoise" else task
        summary: dict[str, list[tuple[float, float]]] = {}
        for i, (name, clean) in enumerate(images.items()):
            seed = args.seed + i
            op, y = degrade(clean, factory, seed)
            runs = {}
            if not args.no_baselines:
                began = time.perf_counter()
                if task == "denoise":
                    if cbm3d is not None:
                        from dipprior.pretrained import _cached
                        runs["CBM3D"] = (_cached(cbm3d, y, op.noise_sigma, args.cbm3d_cache),
                                         0, 0)
                else:
                    runs["Biharmonic"] = (classical_start(y, op), 0, 0)
                seconds = time.perf_counter() - began
                result = DIPInitializedSampler(model, scheduler, recommended_config(op),
                                               progress=False)(y, op, seed=seed)
                runs["Default"] = (result.image, result.nfe, result.seconds["total"])
            for adapt in adapts:
                config = recommended_config(op).replace(adapt=adapt)
                result = DIPInitializedSampler(model, scheduler, config,
                                               progress=False)(y, op, seed=seed)
                key = "Adapted " + json.dumps({k: v for k, v in vars(adapt).items()
                                               if v != getattr(AdaptConfig(), k)}
                                              or {"iterations": adapt.iterations})
                runs[key] = (result.image, result.nfe, result.seconds["total"])
            for method, (image, nfe, secs) in runs.items():
                scores = metrics.evaluate(image.clamp(0, 1), clean)
                secs = seconds if method in ("CBM3D", "Biharmonic") else secs
                emit({"data": Path(args.data).name, "task": label, "image": name,
                      "seed": seed, "method": method, "nfe": nfe, "seconds": secs,
                      "model": args.model, **scores})
                summary.setdefault(method, []).append((scores["psnr"], secs))
            print(name, " ".join(f"{m}={v[-1][0]:.2f}" for m, v in summary.items()), flush=True)
        print(f"== {Path(args.data).name} {label} ({len(images)} crops)")
        for method, values in summary.items():
            n = len(values)
            print(f"{method:60s} PSNR {sum(v[0] for v in values) / n:.2f}  "
                  f"s {sum(v[1] for v in values) / n:.1f}")


if __name__ == "__main__":
    main()
