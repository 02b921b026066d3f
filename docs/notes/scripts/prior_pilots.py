"""Short training pilots at equal compute: which training options make a better restoration prior.

Every arm starts from the same training state (``--start``), trains the same number of steps
(equal compute: the options change what is drawn, not the cost of a step), and is scored as a
one-step Gaussian denoiser (sigma 15, 25, 50) on 128x128 center crops of validation photos the
arms never train on, plus scikit-image's bundled photos (other kinds of pictures).  Choose on
these; never on CBSD68 or Kodak24.

    OMP_WAIT_POLICY=PASSIVE python docs/notes/scripts/prior_pilots.py \\
        --start training/prior-cbsd432 \\
        --train runs/data/train --val runs/data/val --steps 450 --out runs/pilots

Arms are listed in ``ARMS``; results go to ``<out>/pilots.csv`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import torch

from dipprior.diffusion import Augmentation, TimestepDistribution, load, train
from dipprior.experiments import load_folder
from dipprior.io import SAMPLE_IMAGES, sample_image
from dipprior.pretrained import evaluate_denoiser

MIX = TimestepDistribution(low_fraction=0.75, low_max=250)
AUG = Augmentation(rotate=True, scale=(0.5, 2.0), saturation=0.3, brightness=0.1)
ARMS = {
    "uniform": {},
    "low-t 0.75/250": {"timesteps": MIX},
    "low-t 0.75/250 + aug": {"timesteps": MIX, "augment": AUG},
}
SIGMAS = (15, 25, 50)


def score(model, scheduler, sets: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    out = {}
    for set_name, images in sets.items():
        for s in SIGMAS:
            table = evaluate_denoiser(model, scheduler, images, sigma=s / 255, cbm3d=False,
                                      progress=False)
            out[f"{set_name} s{s}"] = next(r["PSNR"] for r in table.rows if r["Image"] == "Average")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", required=True, help="training checkpoint every arm starts from")
    ap.add_argument("--train", required=True, help="training images")
    ap.add_argument("--val", required=True, help="held-out validation images (same kind)")
    ap.add_argument("--steps", type=int, default=450, help="steps per arm (default 450)")
    ap.add_argument("--lr", type=float, default=3e-4, help="default 3e-4")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sets = {"val": load_folder(args.val, size=128),
            "skimage": {n: sample_image(n, 128) for n in SAMPLE_IMAGES}}
    base, scheduler = load(args.start)
    start_step = int(__import__("json").loads(
        (Path(args.start) / "config.json").read_text()).get("step", 0))
    rows = [{"arm": "start", "steps": 0, "seconds": 0.0, **score(base, scheduler, sets)}]
    print(rows[-1], flush=True)
    out = Path(args.out)
    for arm, options in ARMS.items():
        folder = out / arm.replace(" ", "_").replace("/", "-").replace("+", "plus")
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(args.start, folder)
        model, _ = load(args.start)
        began = time.perf_counter()
        result = train(model, scheduler, args.train, steps=start_step + args.steps,
                       batch_size=8, lr=args.lr, warmup=500, ema_decay=0.999, grad_clip=1.0,
                       patch_size=64, checkpoint_dir=folder, checkpoint_every=10**9, seed=0,
                       progress=False, **options)
        model.eval()
        row = {"arm": arm, "steps": args.steps, "seconds": time.perf_counter() - began}
        row.update({f"ema {k}": v for k, v in score(result.ema, scheduler, sets).items()})
        row.update({f"raw {k}": v for k, v in score(model, scheduler, sets).items()})
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
              flush=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "pilots.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
