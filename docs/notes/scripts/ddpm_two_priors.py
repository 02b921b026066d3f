"""DDPM from pure noise (DiffPIR with the tuned presets) with two priors on the same crops.

The previous shipped prior lives in the git history; extract it into a folder first::

    mkdir -p old && for f in config.json model.safetensors; do
        git show bdbd6bf:src/dipprior/weights/cbsd432-small/$f > old/$f; done
    python docs/notes/scripts/ddpm_two_priors.py --previous old --data ../shared/data/test/CBSD68

Prints one line per task and prior: the PSNR of each crop (image i degraded with seed i) and
the mean.
"""

from __future__ import annotations

import argparse

import torch

from dipprior.diffusion import load_pretrained
from dipprior.experiments.data import degrade, load_folder
from dipprior.metrics import psnr
from dipprior.operators import make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.presets import method_configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--previous", required=True, help="folder of the other prior")
    p.add_argument("--data", required=True)
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images = load_folder(args.data, args.n_images, args.size)
    for task in ("denoise", "inpaint"):
        factory = make_task(task)
        for label, path in (("previous", args.previous), ("new", None)):
            model, scheduler = load_pretrained(path)
            sampler = DIPInitializedSampler(model, scheduler, method_configs(task)["DDPM"],
                                            progress=False)
            scores = []
            for i, clean in enumerate(images.values()):
                op, y = degrade(clean, factory, i)
                scores.append(float(psnr(sampler(y, op, seed=i).image, clean)))
            print(task, label, " ".join(f"{s:.2f}" for s in scores),
                  f"mean {sum(scores) / len(scores):.2f}", flush=True)


if __name__ == "__main__":
    main()
