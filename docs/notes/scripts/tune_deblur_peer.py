"""Tune the classical deblurring peer on held-out CBSD432 crops (never the test sets).

Scores, on the first ``--n-images`` of the 16 CBSD432 photos the prior never trained on (128x128
centre crops, image i degraded with seed i), for each blur (``--blurs``, noise 0.01 on [0, 1]):
scikit-image's ``wiener`` (Laplacian regulariser) over ``--balance``, ``unsupervised_wiener``
(self-tuned, seeded), ``richardson_lucy`` over ``--rl-iterations``, and the operator's own
Tikhonov inverse (``Blur.pseudo_inverse``) over ``--regularizer``.  Mean PSNR per setting, one
JSON line each; the clean crop only scores.

    python docs/notes/scripts/tune_deblur_peer.py --data ../shared/data/train/CBSD432 \\
        --out docs/results/deblur/tuning/peer.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tune_classical_start import validation_crops  # (this folder is on sys.path)

from dipprior import metrics
from dipprior.experiments.data import degrade
from dipprior.operators import Blur, make_task


def per_channel(fn, y: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.stack([fn(c) for c in y.double().numpy()])).float()


def main() -> None:
    from skimage.restoration import richardson_lucy, unsupervised_wiener, wiener

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--blurs", default="gaussian:2,motion:15")
    p.add_argument("--n-images", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--balance", default="0.001,0.003,0.01,0.03,0.1,0.3")
    p.add_argument("--regularizer", default="0.0003,0.001,0.003,0.01,0.03")
    p.add_argument("--rl-iterations", default="10,30,100")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    crops = validation_crops(args.data, args.n_images, args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for blur in args.blurs.split(","):
        factory = make_task("deblur", blur=blur)
        cases = [(clean, *degrade(clean, factory, i)) for i, clean in enumerate(crops.values())]
        methods = {}
        for b in map(float, args.balance.split(",")):
            methods[f"wiener balance={b:g}"] = lambda op, y, b=b: per_channel(
                lambda c: wiener(c, op.kernel.numpy(), b, clip=False), y)
        methods["unsupervised_wiener"] = lambda op, y: per_channel(
            lambda c: unsupervised_wiener(c, op.kernel.numpy(), clip=False,
                                          rng=np.random.default_rng(0))[0], y)
        for n in map(int, args.rl_iterations.split(",")):
            methods[f"richardson_lucy iterations={n}"] = lambda op, y, n=n: per_channel(
                lambda c: richardson_lucy(c.clip(0, None), op.kernel.numpy(), n, clip=False), y)
        for r in map(float, args.regularizer.split(",")):
            methods[f"tikhonov regularizer={r:g}"] = lambda op, y, r=r: Blur(
                op.kernel, op.noise_sigma, regularizer=r).pseudo_inverse(y)
        for label, method in methods.items():
            began = time.perf_counter()
            psnrs = [float(metrics.psnr(method(op, y).clamp(0, 1), clean))
                     for clean, op, y in cases]
            row = {"blur": blur, "label": label, "mean": round(float(np.mean(psnrs)), 3),
                   "psnr": [round(v, 3) for v in psnrs],
                   "seconds": round((time.perf_counter() - began) / len(cases), 3)}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(blur, label, row["mean"], row["seconds"], flush=True)


if __name__ == "__main__":
    main()
