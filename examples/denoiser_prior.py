"""A Gaussian denoiser from another package as the diffusion prior (``DenoiserPrior``).

Any ``D(x, sigma)`` that removes white Gaussian noise of std ``sigma`` from [0, 1] images works.
This example wires in CBM3D from the ``bm3d`` package (``pip install bm3d``; offline, no weights)
and, when deepinv is installed with its DRUNet weights already downloaded, deepinv's DRUNet.
It restores a bundled photo (sigma = 25) with ``DIPInitializedSampler(init="observation")``:
DiffPIR's warm start, a few proximal steps, the denoiser as the prior.

    python examples/denoiser_prior.py --denoiser bm3d --steps 3 --size 96
"""

from __future__ import annotations

import argparse
import time

import torch

from dipprior.diffusion import DenoiserPrior, Scheduler
from dipprior.io import SAMPLE_IMAGES, sample_image
from dipprior.metrics import psnr
from dipprior.operators import Denoise
from dipprior.pipeline import DIPInitializedSampler


def bm3d_denoiser():
    """CBM3D as ``D(x, sigma)``: one image at a time, sigma per image."""
    import bm3d  # noqa: F401  (optional: fail here, before any work, when it is missing)

    from dipprior.denoisers import cbm3d

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.stack([cbm3d(xi.clamp(-0.5, 1.5), float(s)).to(x)
                            for xi, s in zip(x, sigma.reshape(-1).tolist(), strict=True)])

    return denoise


def drunet_denoiser():
    """deepinv's DRUNet (needs ``pip install deepinv`` and its weights downloaded already)."""
    import deepinv

    net = deepinv.models.DRUNet(in_channels=3, out_channels=3, pretrained="download").eval()
    return lambda x, sigma: net(x, sigma.reshape(-1, 1, 1, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--denoiser", choices=["bm3d", "drunet"], default="bm3d")
    ap.add_argument("--image", choices=SAMPLE_IMAGES, default="astronaut")
    ap.add_argument("--size", type=int, default=96, help="center crop side")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise std, 0..255 units")
    ap.add_argument("--steps", type=int, default=3, help="reverse steps (= denoiser calls)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        denoiser = bm3d_denoiser() if args.denoiser == "bm3d" else drunet_denoiser()
    except ImportError as exc:
        raise SystemExit(f"{args.denoiser} is not installed ({exc}); pip install "
                         f"{'bm3d' if args.denoiser == 'bm3d' else 'deepinv'}") from None
    scheduler = Scheduler()
    prior = DenoiserPrior(denoiser, scheduler)
    clean = sample_image(args.image, args.size)
    op = Denoise(args.sigma / 255)
    y = op.degrade(clean, torch.Generator().manual_seed(args.seed))
    sampler = DIPInitializedSampler(prior, scheduler, init="observation", steps=args.steps,
                                    progress=False)
    start = time.perf_counter()
    result = sampler(y, op, seed=args.seed)
    print(f"{args.denoiser} as the prior, {args.image} {args.size}x{args.size}, sigma "
          f"{args.sigma:g}: noisy {float(psnr(y.clamp(0, 1), clean)):.2f} dB -> "
          f"{float(psnr(result.image, clean)):.2f} dB (t0={result.t0}, NFE {result.nfe}, "
          f"{time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
