"""A 12 MP photo with a removed object and thin scratches through ``dipprior restore --task
inpaint``: seconds, peak memory, and whether the known pixels came back byte for byte.

Makes a 4000x3000 RGB photo (a bundled scikit-image photo up-sampled, plus fine texture), and a
mask with a 400x300 object and 20 thin scratches (3 pixels wide, 150 to 400 long, any angle),
about 1.1% of the pixels missing; writes both as 8-bit PNG and runs, as a user would,

    dipprior restore photo.png --task inpaint --mask mask.png --out out.png [OPTIONS]

timing it and reading its peak resident memory.  Only windows around the holes are restored
(``dipprior.pipeline.windows``); the forecast ``restore`` prints first counts only them.  Then
it checks that every known pixel of ``out.png`` equals the input's bytes and prints the PSNR on
the missing pixels against the clean photo.  Extra arguments go to ``restore`` (``--budget
fast``, ``--threads 2`` ...).  Target (issue 31): at most 60 s on 2 cores for 12 MP.

    python benchmarks/bench_inpaint_windows.py --out /tmp/inpaint -- --threads 2
    python benchmarks/bench_inpaint_windows.py --width 1200 --height 900 --out /tmp/small
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_large_photo import photo as large_photo  # the same photo
from PIL import Image

from dipprior.io import save_image


def photo(width: int, height: int, seed: int) -> torch.Tensor:
    """bench_large_photo's photo on the 8-bit grid, (3, height, width) in [0, 1]."""
    return (large_photo(width, height, seed) * 255).round() / 255


def damage(width: int, height: int, seed: int, scratches: int = 20) -> np.ndarray:
    """(height, width) bool, True = missing: a 400x300 object (scaled with the photo) and thin
    scratches."""
    from skimage.draw import line

    rng = np.random.default_rng(seed)
    scale = min(width / 4000, height / 3000)
    missing = np.zeros((height, width), bool)
    oh, ow = max(1, round(300 * scale)), max(1, round(400 * scale))
    y, x = int(rng.integers(0, height - oh)), int(rng.integers(0, width - ow))
    missing[y:y + oh, x:x + ow] = True
    for _ in range(scratches):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        angle, length = rng.uniform(0, np.pi), rng.integers(150, 400) * scale
        y1 = int(np.clip(y0 + length * np.sin(angle), 0, height - 1))
        x1 = int(np.clip(x0 + length * np.cos(angle), 0, width - 1))
        rows, cols = line(y0, x0, y1, x1)
        for d in (-1, 0, 1):
            missing[np.clip(rows + d, 0, height - 1), cols] = True
    return missing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("restore_options", nargs="*", help="after --: options for restore")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clean = photo(args.width, args.height, args.seed)
    missing = damage(args.width, args.height, args.seed)
    observed = clean * torch.from_numpy(~missing)
    save_image(observed, out / "photo.png")
    Image.fromarray(np.where(missing, 0, 255).astype(np.uint8)).save(out / "mask.png")
    print(f"{args.width}x{args.height}: {missing.mean():.2%} of the pixels missing")
    command = [sys.executable, "-m", "dipprior", "restore", str(out / "photo.png"), "--task",
               "inpaint", "--mask", str(out / "mask.png"), "--out", str(out / "out.png"),
               "--no-progress", *args.restore_options]
    print("$", " ".join(command[2:]), flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, env=os.environ, check=False)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    if done.returncode:
        raise SystemExit(f"restore failed ({done.returncode})")
    before = np.asarray(Image.open(out / "photo.png"))
    after = np.asarray(Image.open(out / "out.png"))
    known = ~missing
    identical = bool(np.array_equal(before[known], after[known]))
    holes = torch.from_numpy(after[missing].astype(np.float64) / 255)
    truth = clean.permute(1, 2, 0).numpy()[missing].astype(np.float64)
    mse = float(((holes.numpy() - truth) ** 2).mean())
    print(f"restore: {seconds:.1f} s wall, {peak:.2f} GiB peak RSS; known pixels byte-identical: "
          f"{identical}; PSNR on the missing pixels {10 * np.log10(1 / mse):.2f} dB "
          f"(target: <= 60 s on 2 cores at 12 MP)")
    if not identical:
        raise SystemExit("known pixels changed")


if __name__ == "__main__":
    main()
