"""Attention and memory order at real sizes: what windowed attention and channels_last cost in
quality and buy in time for the shipped prior's one-step denoiser on large crops.

For every variant -- global attention (the reference), attention within windows of W input
pixels, and channels_last -- it restores centre crops of ``--size`` (default 512) of the first
``--n-images`` photos of a folder (Gaussian noise ``--sigma``, seeds 0 + i, the prior's one step,
what ``restore`` runs on each tile) and prints PSNR and seconds per image against the reference
measured in the same run; "before" is the attention call of dipprior 0.1.0 (its transposed
operands took PyTorch's math path), the reference for the speed-up:

    python benchmarks/bench_attention.py --data ../shared/data/test/Kodak24 --n-images 8 \\
        --windows 64 128 256 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dipprior.diffusion import load_pretrained, unet
from dipprior.experiments import load_folder
from dipprior.metrics import psnr
from dipprior.operators import Denoise
from dipprior.pipeline import DIPInitializedSampler

FUSED = unet._attend


def _math_path(qkv: torch.Tensor) -> torch.Tensor:
    """The attention as dipprior 0.1.0 called it (transposed operands): PyTorch's math path."""
    n, c3, h, w = qkv.shape
    q, k, v = qkv.reshape(n, 3, c3 // 3, h * w).transpose(-1, -2).unbind(1)
    out = torch.nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])
    return out[:, 0].transpose(-1, -2).reshape(n, c3 // 3, h, w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of photos")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--size", type=int, default=512, help="centre crop side")
    p.add_argument("--sigma", type=float, default=25.0, help="noise std, 0..255 units")
    p.add_argument("--windows", type=int, nargs="*", default=[128, 256],
                   help="attention windows to try (input pixels)")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained(device="cpu")
    images = list(load_folder(args.data, args.n_images, args.size).values())
    op = Denoise(args.sigma / 255)
    noisy = [op.degrade(x, torch.Generator().manual_seed(i)) for i, x in enumerate(images)]
    variants = [("global attention", None, False), ("before: math-path attention", None, False)]
    variants += [(f"window {w}", w, False) for w in args.windows]
    variants += [("channels_last", None, True)]
    variants += [(f"channels_last + window {w}", w, True) for w in args.windows]
    sampler = DIPInitializedSampler(model, scheduler, progress=False)
    reference: list[float] = []
    print(f"{len(images)} crops of {args.size}, sigma {args.sigma:g}, threads "
          f"{torch.get_num_threads()}")
    print("| variant | PSNR | - global | seconds / image | / global |")
    print("|---|---|---|---|---|")
    for label, window, channels_last in variants:
        model.attention_window, model.channels_last = window, channels_last
        unet._attend = _math_path if label.startswith("before") else FUSED
        sampler(noisy[0], op, seed=0)  # warm-up
        scores, seconds = [], []
        for i, (y, x) in enumerate(zip(noisy, images, strict=True)):
            began = time.perf_counter()
            restored = sampler(y, op, seed=i).image
            seconds.append(time.perf_counter() - began)
            scores.append(psnr(restored, x))
        if not reference:
            reference = [statistics.mean(scores), statistics.median(seconds)]
        mean, median = statistics.mean(scores), statistics.median(seconds)
        print(f"| {label} | {mean:.3f} | {mean - reference[0]:+.3f} | {median:.2f} | "
              f"{median / reference[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
