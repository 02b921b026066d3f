"""Speed of the diffusion half: training steps/s and the sampler's per-NFE overhead.

Ratios are measured in one run on one machine: ``sample`` against a bare loop of UNet calls
(the overhead ratio; the target is < 5 %) and against diffusers' ``DDIMScheduler`` driving the
same UNet.  Runs are interleaved and the median over repeats is reported.

    python benchmarks/bench_diffusion.py --size 64 --base-channels 32 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dipprior._tensor import default_device
from dipprior.diffusion import Scheduler, UNet, sample, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(net: UNet, sched: Scheduler, args: argparse.Namespace,
                   device: torch.device) -> float:
    g = torch.Generator().manual_seed(0)
    data = [torch.rand(3, args.size, args.size, generator=g) for _ in range(16)]
    # first steps warm up kernels and allocators; time the rest
    train(net, sched, data, steps=args.warmup_steps, batch_size=args.train_batch,
          warmup=10, device=device, progress=False)
    start = time.perf_counter()
    train(net, sched, data, steps=args.train_steps, batch_size=args.train_batch, warmup=10,
          device=device, progress=False)
    _sync(device)
    return args.train_steps / (time.perf_counter() - start)


def bare_loop(net: UNet, timesteps: list[int], x: torch.Tensor) -> torch.Tensor:
    t_batch = [torch.full((x.shape[0],), t, device=x.device, dtype=torch.long) for t in timesteps]
    with torch.inference_mode():
        for t in t_batch:
            out = net(x, t)
    return out


def diffusers_loop(net: UNet, ddim, steps: int, x: torch.Tensor) -> torch.Tensor:
    ddim.set_timesteps(steps, device=x.device)
    with torch.inference_mode():
        for t in ddim.timesteps:
            x = ddim.step(net(x, t.expand(x.shape[0])), t, x).prev_sample
    return x


def bench_step_only(sched: Scheduler, x: torch.Tensor, steps: int, calls: int = 300) -> float:
    """Seconds per ``Scheduler.step`` call, the sampler's only work besides the UNet."""
    timesteps = sched.timesteps(steps).tolist()
    out = torch.randn_like(x)
    with torch.inference_mode():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(calls):
                t = timesteps[i % len(timesteps)]
                sched.step(out, t, x, prev_t=t - 1)
            _sync(x.device)
            best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=1, help="images per sampling call")
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="NFE per sampling run")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    torch.manual_seed(0)
    net = UNet(base_channels=args.base_channels).to(device)
    sched = Scheduler()
    nparams = sum(p.numel() for p in net.parameters())
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"UNet(base_channels={args.base_channels}) params={nparams} "
          f"size={args.size} batch={args.batch} NFE={args.steps}")

    sps = bench_training(net, sched, args, device)
    print(f"training: {sps:.3f} steps/s (batch {args.train_batch}, {args.size}x{args.size})")

    net.eval()
    shape = (args.batch, 3, args.size, args.size)
    x = torch.randn(shape, device=device)
    timesteps = sched.timesteps(args.steps).tolist()
    try:
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config({**sched.to_config(), "set_alpha_to_one": True})
    except ImportError:
        ddim = None
    runs = {
        "bare UNet loop": lambda: bare_loop(net, timesteps, x),
        "dipprior sample": lambda: sample(net, sched, shape, steps=args.steps, device=device,
                                          generator=torch.Generator(device).manual_seed(0),
                                          progress=False),
    }
    if ddim is not None:
        runs["diffusers DDIM"] = lambda: diffusers_loop(net, ddim, args.steps, x)
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved, so load changes hit all alike
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / args.steps)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, v in med.items():
        print(f"{name:16s} {1e3 * v:8.3f} ms/NFE  (min {1e3 * min(times[name]):.3f})")
    base = med["bare UNet loop"]
    print(f"overhead ratio sample / bare loop: {med['dipprior sample'] / base:.4f} "
          f"(min-based {min(times['dipprior sample']) / min(times['bare UNet loop']):.4f})")
    if ddim is not None:
        ratio = med["dipprior sample"] / med["diffusers DDIM"]
        print(f"ratio sample / diffusers DDIM:     {ratio:.4f}")
    step_s = bench_step_only(sched, x, args.steps)
    print(f"Scheduler.step alone: {1e6 * step_s:.1f} us/step = {100 * step_s / base:.3f} % "
          "of one UNet call")


if __name__ == "__main__":
    main()
