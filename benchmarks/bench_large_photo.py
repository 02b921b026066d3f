"""A phone-sized photo through ``dipprior restore``: seconds, peak memory, and the tiles' cost
in quality against one pass on a crop.

Makes a 4000x3000 (12 MP) RGB photo (a bundled scikit-image photo up-sampled, plus fine
texture so that it is not trivially smooth), writes it as JPEG, and

1. runs ``dipprior restore photo.jpg --task denoise --sigma 25 --out out.png`` as a user would
   (a real noisy photo: here a JPEG, quality 95, of a simulated noisy copy), timing it and
   reading its peak resident memory;
2. in this process, restores a 1536x1536 region of the same noisy copy in 512-pixel tiles
   (``pipeline.tiles``) and a 512x512 crop of it (across tile borders) in one pass, and prints
   both PSNRs on that crop (image seed ``--seed``); below 1536 px the region is the photo's
   smaller side, and the tiles and the crop a third of it.

    python benchmarks/bench_large_photo.py --threads 2 --out /tmp/large
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dipprior.diffusion import load_pretrained
from dipprior.io import sample_image, save_image
from dipprior.metrics import psnr
from dipprior.operators import Denoise
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.tiles import restore_tiled


def photo(width: int, height: int, seed: int) -> torch.Tensor:
    base = sample_image("coffee")[None]
    big = F.interpolate(base, size=(height, width), mode="bicubic", align_corners=False)[0]
    g = torch.Generator().manual_seed(seed)
    texture = F.interpolate(torch.rand(1, 3, height // 4, width // 4, generator=g),
                            size=(height, width), mode="bilinear", align_corners=False)[0]
    return (0.85 * big + 0.15 * texture).clamp(0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--skip-cli", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clean = photo(args.width, args.height, args.seed)
    op = Denoise(args.sigma / 255)
    noisy = op.degrade(clean, torch.Generator().manual_seed(args.seed))
    save_image(noisy.clamp(0, 1), out / "noisy.jpg")  # what a user has: a JPEG

    if not args.skip_cli:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or torch.get_num_threads())}
        code = (f"import resource, sys; from dipprior.cli import main; "
                f"rc = main(['restore', {str(out / 'noisy.jpg')!r}, '--task', 'denoise', "
                f"'--sigma', '{args.sigma:g}', '--out', {str(out / 'out.png')!r}]); "
                f"print('peak RSS GiB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss "
                f"/ 2**20, file=sys.stderr); sys.exit(rc)")
        began = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True)
        print(run.stdout.strip())
        print(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "")
        print(f"restore: exit {run.returncode}, {time.perf_counter() - began:.0f} s wall")

    # tiles vs one pass: a 1536x1536 region in 512-pixel tiles (the CLI's), then its central
    # 512x512 crop (it straddles tile borders) restored in one pass; a photo smaller than
    # 1536 px gets a region of its smaller side, and tiles and crop a third of that
    side = min(1536, args.height, args.width)
    tile = 512 if side == 1536 else max(16, side // 3)
    sampler = DIPInitializedSampler(*load_pretrained(), progress=False)
    ry, rx = (args.height - side) // 2, (args.width - side) // 2
    region = (slice(None), slice(ry, ry + side), slice(rx, rx + side))
    clean, noisy = clean[region], noisy[region]
    began = time.perf_counter()
    tiled = restore_tiled(sampler, noisy, op, args.seed, tile=tile,
                          overlap=min(32, tile // 4), progress=False)
    print(f"tiled {side}x{side} region in {tile}-pixel tiles in-process: "
          f"{time.perf_counter() - began:.0f} s")
    y0 = x0 = tile + tile * 100 // 512
    crop = (slice(None), slice(y0, y0 + tile), slice(x0, x0 + tile))
    whole = sampler(noisy[crop], op, seed=args.seed).image
    scores = {name: float(psnr(image.clamp(0, 1), clean[crop]))
              for name, image in (("tiled", tiled[crop]), ("one pass", whole),
                                  ("noisy", noisy[crop]))}
    print(f"{tile}x{tile} crop at ({y0}, {x0}): " + ", ".join(f"{k} {v:.2f} dB"
                                                       for k, v in scores.items()))


if __name__ == "__main__":
    main()
