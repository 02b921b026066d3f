"""Noise level unknown: how close ``estimate_noise_sigma`` gets, and what the estimate costs.

For each sigma, every crop is degraded (image i with seed i, unclipped Gaussian noise) and
sigma is estimated from the noisy crop alone with Chen et al.'s PCA estimate (the default) and
Donoho's wavelet MAD; then the library's default for Gaussian denoising (the prior's one step
from the observation) runs once with the true sigma and once with the PCA estimate::

    python examples/noise_estimate.py --data runs/data/val --n-images 16 --sigmas 15 25 50

Prints one Markdown table: mean and range of each estimate (0..255) and the mean PSNR with the
true and the estimated sigma, with the worst per-crop difference.  The clean crop only scores.
"""

from __future__ import annotations

import argparse

import torch

from dipprior.diffusion import load_pretrained
from dipprior.estimators import estimate_noise_sigma
from dipprior.experiments.data import degrade, load_folder
from dipprior.metrics import psnr
from dipprior.operators import Denoise, make_task
from dipprior.pipeline import DIPInitializedSampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of clean images")
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0, 50.0])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    sampler = DIPInitializedSampler(model, scheduler, progress=False)  # the recommended preset
    images = list(load_folder(args.data, args.n_images, args.size).values())
    print("| sigma | PCA estimate: mean (range) | MAD estimate: mean (range) | PSNR, true sigma "
          "| PSNR, PCA estimate | worst crop |")
    print("|---|---|---|---|---|---|")
    for sigma in args.sigmas:
        pca, mad, true_psnr, est_psnr = [], [], [], []
        for i, clean in enumerate(images):
            op, y = degrade(clean, make_task("denoise", sigma=sigma), i)
            pca.append(float(estimate_noise_sigma(y[None])[0]))
            mad.append(float(estimate_noise_sigma(y[None], "mad")[0]))
            true_psnr.append(float(psnr(sampler(y, op, seed=i).image, clean)))
            est_psnr.append(float(psnr(sampler(y, Denoise(pca[-1]), seed=i).image, clean)))
        worst = min(e - t for e, t in zip(est_psnr, true_psnr, strict=True))
        print(f"| {sigma:g} | {_spread(pca)} | {_spread(mad)} | {_mean(true_psnr):.2f} | "
              f"{_mean(est_psnr):.2f} | {worst:+.2f} |", flush=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _spread(sigmas: list[float]) -> str:
    scaled = [255 * s for s in sigmas]
    return f"{_mean(scaled):.2f} ({min(scaled):.1f}-{max(scaled):.1f})"


if __name__ == "__main__":
    main()
