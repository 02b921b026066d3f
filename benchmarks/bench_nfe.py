"""How close one NFE of the shipped prior runs to the machine's limit.

For each ``--sizes`` (default 128 and 512 px, batch 1, inference mode) and precision (float32;
bfloat16 autocast, ``dtype="bfloat16"``; float32 with channels_last), it times one network
evaluation, counts its floating-point operations with ``torch.utils.flop_counter`` and prints
the achieved GFLOP/s next to the rate of a large matrix product (``--matmul`` square, the same
dtype) measured in the same run: the ratio is the share of the machine's dense rate an NFE
reaches.  With ``--attention-window`` it also times the UNet with windowed attention.

    python benchmarks/bench_nfe.py --threads 2
    python benchmarks/bench_nfe.py --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from bench_priors import _median_seconds as median_seconds  # the same timing loop
from torch.utils.flop_counter import FlopCounterMode

from dipprior.diffusion import load_pretrained
from dipprior.diffusion.precision import fast_bf16, set_precision


def matmul_gflops(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, repeats, device)
    return 2 * n**3 / seconds / 1e9


def nfe_flops(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--matmul", type=int, default=2048, help="side of the reference product")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="time bfloat16 (auto: where the device has native bf16 kernels)")
    p.add_argument("--attention-window", type=int, default=None,
                   help="also time windowed attention with this window (tokens)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, _ = load_pretrained(device=device)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and fast_bf16(device))
    print(f"device {device}, threads {torch.get_num_threads()}, native bf16 {fast_bf16(device)}"
          f", torch {torch.__version__}")
    rates = {"float32": matmul_gflops(args.matmul, torch.float32, device, args.repeats)}
    if bf16:
        rates["bfloat16"] = matmul_gflops(args.matmul, torch.bfloat16, device, args.repeats)
    for name, rate in rates.items():
        print(f"matmul {args.matmul}^2 {name}: {rate:.1f} GFLOP/s")
    print("| size | variant | s/NFE | GFLOP | GFLOP/s | / matmul | time / fp32 |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=device)
        t = torch.tensor([500], device=device)
        flops = nfe_flops(model, x, t)
        variants: list[tuple[str, str, Callable[[], None]]] = [("float32", "float32", lambda: None)]
        if bf16:
            variants.append(("bfloat16 autocast", "bfloat16",
                             lambda: set_precision(model, "bfloat16")))
        variants.append(("float32 channels_last", "float32",
                         lambda: model.to(memory_format=torch.channels_last)))
        if args.attention_window:
            variants.append((f"float32 attention window {args.attention_window}", "float32",
                             lambda: setattr(model, "attention_window", args.attention_window)))
        base = None
        for label, rate_key, setup in variants:
            set_precision(model, "float32")
            model.to(memory_format=torch.contiguous_format)
            if hasattr(model, "attention_window"):
                model.attention_window = None
            setup()
            xin = x.contiguous(memory_format=torch.channels_last) if "channels_last" in label \
                else x

            def run(xin: torch.Tensor = xin, t: torch.Tensor = t) -> None:
                with torch.inference_mode():
                    model(xin, t)

            seconds = median_seconds(run, args.repeats, device)
            base = seconds if base is None else base
            achieved = flops / seconds / 1e9
            print(f"| {size} | {label} | {seconds:.4f} | {flops / 1e9:.2f} | {achieved:.1f} | "
                  f"{achieved / rates[rate_key]:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
