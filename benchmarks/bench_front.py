"""Seconds of each point of the quality-time front, against DiffPIR from noise in the same run.

Times every point of ``dipprior.pipeline.presets.FRONT`` for a task (the settings
``budget="fast"``, ``"balanced"`` and ``"best"`` run; for the noise-free tasks also the DIP start
it is weighed against: the 16- and 64-channel DIP fits of the tables) on one 128x128 crop with
the shipped prior, interleaved over ``--repeats`` rounds, median reported, and prints each as
seconds and as a ratio to the reference loop: DiffPIR from pure noise, 100 steps (the ``DDPM``
preset), the method the default must not be slower than.  Run it on a quiet machine.

    python benchmarks/bench_front.py --threads 2 --repeats 3
    python benchmarks/bench_front.py --threads 2 --repeats 3 --task denoise
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dipprior import dip
from dipprior.diffusion import load_pretrained
from dipprior.dip import DIPConfig
from dipprior.experiments import degrade
from dipprior.io import sample_image
from dipprior.operators import make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.presets import EFFORTS, budget_config, method_configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--task", default="inpaint",
                   choices=["inpaint", "box", "sr", "deblur", "denoise"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dip-iterations", type=int, default=100,
                   help="DIP iterations timed (seconds are scaled to 500 and 1000)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    op, y = degrade(sample_image("astronaut", size=args.size), make_task(args.task), 0)
    runs = {"DiffPIR (noise), 100 steps [reference]": method_configs(args.task)["DDPM"]}
    runs |= {f"front {effort}": budget_config(op, effort) for effort in EFFORTS}
    samplers = {name: DIPInitializedSampler(model, scheduler, config, progress=False)
                for name, config in runs.items()}
    dips = {"DIP 16 ch": DIPConfig(channels=16, iterations=args.dip_iterations, progress=False),
            "DIP 64 ch": DIPConfig(iterations=args.dip_iterations, progress=False)}
    if args.task == "denoise":  # the denoising front has no DIP start to weigh
        dips = {}
    times: dict[str, list[float]] = {name: [] for name in [*samplers, *dips]}
    for sampler in samplers.values():  # warm-up
        sampler(y, op, seed=0)
    for config in dips.values():
        dip.fit(y, op, config=config.replace(iterations=5))
    for _ in range(args.repeats):
        for name, sampler in samplers.items():
            began = time.perf_counter()
            sampler(y, op, seed=0)
            times[name].append(time.perf_counter() - began)
        for name, config in dips.items():
            began = time.perf_counter()
            dip.fit(y, op, config=config)
            times[name].append((time.perf_counter() - began) / args.dip_iterations)
    reference = statistics.median(next(iter(times.values())))
    print(f"{args.task}, {args.size}x{args.size}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, median of {args.repeats}")
    print(f"{'method':<44} {'seconds':>9} {'ratio':>7}")
    for name, values in times.items():
        if name.startswith("DIP"):
            per_it = statistics.median(values)
            for k in (500, 1000):
                print(f"{name + f', {k} iterations':<44} {per_it * k:9.2f} "
                      f"{per_it * k / reference:7.2f}")
            continue
        sec = statistics.median(values)
        print(f"{name:<44} {sec:9.2f} {sec / reference:7.2f}")


if __name__ == "__main__":
    main()
