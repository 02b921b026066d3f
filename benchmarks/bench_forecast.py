"""``restore``'s forecast against the run: expected seconds and memory (printed before any work)
next to the measured wall-clock seconds and peak memory (the child's max RSS), per photo size.

Each size is scikit-image's astronaut photo, resized, restored by ``dipprior restore --simulate``
in a process of its own, one at a time, smallest first (the peak is the largest child's so far);
the seconds are the restoration's own (restore's summary line), as the forecast's are:

    python benchmarks/bench_forecast.py --sizes 640x480 1024x768 1536x1536 --task denoise
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dipprior.io import sample_image, save_image


def photo(width: int, height: int) -> torch.Tensor:
    image = sample_image("astronaut", size=256)
    return torch.nn.functional.interpolate(image[None], size=(height, width), mode="bicubic",
                                           align_corners=False)[0].clamp(0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["640x480", "1024x768", "1536x1536"],
                   help="WIDTHxHEIGHT")
    p.add_argument("--task", default="denoise")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("restore_options", nargs="*", help="more restore options, after --")
    args = p.parse_args()
    print(f"task {args.task}, threads {args.threads}, torch {torch.__version__}")
    print("| size | forecast s | restoration s | actual / forecast | forecast GiB | peak GiB | "
          "peak / forecast |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            source = Path(tmp) / f"{size}.png"
            save_image(photo(width, height), source)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            began = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "dipprior", "restore", str(source), "--task", args.task,
                 "--simulate", "--out", str(Path(tmp) / f"out-{size}.png"), "--no-progress",
                 "--threads", str(args.threads), *args.restore_options],
                capture_output=True, text=True)
            seconds = time.perf_counter() - began
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest
            if run.returncode != 0:
                print(f"| {size} | failed: {run.stderr.strip().splitlines()[-1]} |")
                continue
            found = re.search(r"expect about ([\d.]+) s and ([\d.]+) GiB", run.stdout)
            # the restoration's own seconds (restore's summary line), not the process start
            done = re.search(r"seconds (?:DIP )?([\d.]+)(?: \+ diffusion ([\d.]+))?", run.stdout)
            if done:
                seconds = float(done.group(1)) + float(done.group(2) or 0)
            fs, fm = (float(found.group(1)), float(found.group(2))) if found else (0.0, 0.0)
            peak_gib = max(peak, before) / 2**20
            print(f"| {width}x{height} | {fs:.0f} | {seconds:.1f} | {seconds / max(fs, 1e-9):.2f} "
                  f"| {fm:.2f} | {peak_gib:.2f} | {peak_gib / max(fm, 1e-9):.2f} |", flush=True)


if __name__ == "__main__":
    main()
