"""What adapting the prior to each image costs: the defaults with and without ``adapt``.

Times, at ``--size`` with the shipped prior, the reference loop -- one model evaluation (batch 1,
inference mode) -- then the denoising default (the one step) and the noise-free default (the
biharmonic start, 4 chains of 25 steps) without and with the adaptation the results used
(``AdaptConfig(iterations=20)`` and ``AdaptConfig(iterations=5, every=5)``).  Medians over
``--repeats``; every time also as a ratio to the reference loop measured in the same run.

    python benchmarks/bench_adapt.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dipprior.diffusion import load_pretrained
from dipprior.io import sample_image
from dipprior.operators import Denoise, Inpaint, random_pixel_mask
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pipeline.presets import recommended_config


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    clean = sample_image("coffee", args.size)
    x = torch.zeros(1, 3, args.size, args.size)
    steps = torch.tensor([56])

    def nfe() -> None:
        with torch.inference_mode():
            model(x, steps)

    reference = median_seconds(nfe, args.repeats)
    print(f"reference loop: one model evaluation at {args.size}x{args.size}: "
          f"{reference:.3f} s (threads {torch.get_num_threads()})")
    denoise = Denoise(25 / 255)
    holes = Inpaint(random_pixel_mask((args.size, args.size), 0.5,
                                      torch.Generator().manual_seed(0)))
    cases = [("denoise, one step", denoise, None),
             ("denoise, one step + adapt 20", denoise, AdaptConfig(iterations=20)),
             ("50% pixels, 4 x 25 steps", holes, None),
             ("50% pixels, 4 x 25 steps + adapt 5 every 5", holes,
              AdaptConfig(iterations=5, every=5))]
    for label, op, adapt in cases:
        y = op.degrade(clean, torch.Generator().manual_seed(0))
        sampler = DIPInitializedSampler(model, scheduler,
                                        recommended_config(op).replace(adapt=adapt),
                                        progress=False)
        repeats = args.repeats if adapt is None or op is denoise else 1
        seconds = median_seconds(lambda: sampler(y, op, seed=0), repeats)  # noqa: B023
        print(f"{label:45s} {seconds:7.2f} s  {seconds / reference:7.1f}x the reference loop")


if __name__ == "__main__":
    main()
