"""The cost model of an informed start: seconds per NFE of each prior, per DIP iteration, and the
NFE cost above which DIP(k)->DDPM(n) is cheaper than DiffPIR's 100 steps.

Times one network evaluation (batch 1, inference mode) of the shipped prior and of the two
published guided-diffusion (ADM) architectures -- FFHQ 256 (93.6M parameters, DPS's
``ffhq_10m.pt``) and ImageNet 256 unconditional (552.8M, ``256x256_diffusion_uncond.pt``), with
random weights (the cost does not depend on them) -- and one DIP iteration (forward, loss,
backward, Adam step; 64 and 16 channels), at each ``--sizes``, in float32 and, where the device
has native bfloat16 kernels (or ``--bf16 on``), under bf16 autocast.  Medians over
``--repeats`` after a warm-up; ratios are against the reference loop, the shipped prior's NFE
at the first size in float32, measured in the same run.

From those it prints, per task preset (``pipeline.presets``), the cost per NFE above which the
DIP start (k DIP iterations, then n reverse steps) is cheaper than DiffPIR from noise (100
NFE): ``c_nfe > k * c_dip / (100 - n)``, and which priors are above it.

    python benchmarks/bench_priors.py --threads 2                     # this CPU
    python benchmarks/bench_priors.py --device cuda --bf16 auto       # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dipprior import dip
from dipprior.diffusion import adm_unet, load_pretrained
from dipprior.diffusion.precision import fast_bf16
from dipprior.dip import DIPConfig
from dipprior.operators import Inpaint, random_pixel_mask
from dipprior.pipeline.presets import CLASSICAL_MEAN, method_configs
from dipprior.pipeline.tasks import DIP_BUDGET

DIFFPIR_NFE = 100


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    run()  # warm-up: kernels chosen, memory allocated
    _sync(device)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def nfe_seconds(model: torch.nn.Module, size: int, device: torch.device,
                autocast: torch.dtype | None, repeats: int) -> float:
    x = torch.randn(1, 3, size, size, device=device)
    t = torch.tensor([500], device=device)

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32,
                                                    enabled=autocast is not None):
            return model(x, t)

    return _median_seconds(run, repeats, device)


def dip_seconds(channels: int, size: int, device: torch.device, autocast: bool,
                iterations: int, repeats: int) -> float:
    """Seconds per DIP iteration: a fit of 2 + ``iterations`` minus a fit of 2, so that the
    set-up (network, input, optimiser) is not counted per iteration."""
    g = torch.Generator().manual_seed(0)
    op = Inpaint(random_pixel_mask((size, size), 0.5, g))
    y = op.degrade(torch.rand(3, size, size, generator=g), g)

    def fit(k: int) -> Callable[[], object]:
        config = DIPConfig(channels=channels, iterations=k, autocast=autocast, progress=False)
        return lambda: dip.fit(y, op, config=config, device=device)

    long = _median_seconds(fit(2 + iterations), repeats, device)
    return max(long - _median_seconds(fit(2), repeats, device), 0.0) / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="auto: only where the device has native bf16 kernels")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dip-iterations", type=int, default=10, help="DIP iterations per timing")
    p.add_argument("--priors", nargs="+", default=["shipped", "adm-ffhq256",
                                                   "adm-imagenet256-uncond"])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and fast_bf16(device))
    precisions: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if bf16:
        precisions.append(("bf16", torch.bfloat16))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}; bf16 "
          f"{'timed' if bf16 else 'skipped (no native bf16 kernels here; --bf16 on forces it)'}"
          f"; median of {args.repeats} after a warm-up")

    nfe: dict[tuple[str, int, str], float] = {}
    for prior in args.priors:
        torch.manual_seed(0)
        model = (load_pretrained(device=device)[0] if prior == "shipped"
                 else adm_unet(prior).to(device).eval())
        params = sum(q.numel() for q in model.parameters())
        for size in args.sizes:
            for label, dtype in precisions:
                nfe[prior, size, label] = nfe_seconds(model, size, device, dtype, args.repeats)
                print(f"  measured {prior} ({params / 1e6:.1f}M) {size}px {label}: "
                      f"{nfe[prior, size, label]:.3f} s/NFE", flush=True)
        del model
    dip_it: dict[tuple[int, int, str], float] = {}
    for channels in (64, 16):
        for size in args.sizes:
            for label, dtype in precisions:
                dip_it[channels, size, label] = dip_seconds(
                    channels, size, device, dtype is not None, args.dip_iterations,
                    args.repeats)
                print(f"  measured DIP {channels} ch {size}px {label}: "
                      f"{dip_it[channels, size, label]:.3f} s/iteration", flush=True)

    reference = nfe["shipped" if "shipped" in args.priors else args.priors[0],
                    args.sizes[0], "fp32"]
    print(f"\nseconds per NFE (batch 1) and per DIP iteration; ratio to the reference loop "
          f"(the first prior's NFE at {args.sizes[0]} px fp32 = {reference:.3f} s)")
    print(f"{'network':<34} {'px':>4} {'prec':>5} {'seconds':>9} {'ratio':>8}")
    for (prior, size, label), sec in nfe.items():
        print(f"{prior + ' NFE':<34} {size:>4} {label:>5} {sec:9.3f} {sec / reference:8.2f}")
    for (channels, size, label), sec in dip_it.items():
        print(f"{f'DIP {channels} ch iteration':<34} {size:>4} {label:>5} {sec:9.3f} "
              f"{sec / reference:8.2f}")

    # the DIP start of each task preset: k DIP iterations (64 channels, the sampler's default
    # budget; denoising stops by the prior's reference at up to 2000), then n reverse steps
    starts = {"inpaint/box/sr: DIP(1000)->DDPM(25)": (64, DIP_BUDGET,
                                                      method_configs("inpaint")["DIP->DDPM"].steps),
              "inpaint/box/sr: DIP16(500)->DDPM(25)": (16, 500, 25),
              "denoise: DIP(<=2000)->DDPM(3)": (64, 2000, method_configs("denoise")["DIP->DDPM"]
                                                .steps)}
    print(f"\ncrossover: the NFE cost above which the DIP start beats DiffPIR's {DIFFPIR_NFE} "
          f"NFE in seconds (c > k * c_dip / ({DIFFPIR_NFE} - n)); the noise-free default "
          f"(classical start, {CLASSICAL_MEAN.samples} x {CLASSICAL_MEAN.steps} NFE) costs "
          f"DiffPIR's NFE at any prior cost")
    label = precisions[-1][0]
    for size in args.sizes:
        for start, (channels, k, n) in starts.items():
            crossover = k * dip_it[channels, size, label] / (DIFFPIR_NFE - n)
            above = [prior for prior in args.priors if nfe[prior, size, label] > crossover]
            print(f"{size}px {label} {start:<40} c* = {crossover:7.3f} s/NFE; above it: "
                  f"{', '.join(above) or 'none'}")


if __name__ == "__main__":
    main()
