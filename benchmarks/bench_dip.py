"""Iteration speed of ``dipprior.dip.fit`` against a plain PyTorch loop over the same network.

For each channel count and image size the two are run alternately (``--reps`` rounds of
``--iters`` iterations each, after a warm-up) in one process, so a busy machine slows both alike;
the table reports median seconds per iteration (wall clock and process CPU time) and the ratio
ours / plain. Both are complete fits (build the network, iterate, one final forward), so per-call
costs count against ``fit`` at least as much as in a real 3000-iteration run. The plain loop is
the minimum the algorithm needs: perturb z, forward, MSE, backward, Adam step. ``fit`` adds the
output average, the loss record, spike recovery (default on) and, in the ``+wmv`` rows, ES-WMV
early stopping (with a patience that never fires).

Further rows: the memory format (``channels_last`` on/off), bfloat16 autocast against the float32
fit (``fit autocast / fit``), ``torch.compile`` (``--compile``, slow to build on a CPU), and N
networks fitted as one batch against N sequential fits.

    python benchmarks/bench_dip.py                      # the full table (a few minutes on CPU)
    python benchmarks/bench_dip.py --channels 64 --sizes 128 --iters 5 --reps 3   # quick look
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from dipprior import dip
from dipprior._tensor import default_device
from dipprior.dip.fit import build_network, use_channels_last


def plain_loop(channels: int, size: int, iters: int, device: torch.device,
               channels_last: bool, compile_: bool = False) -> Callable[[], None]:
    """A complete textbook DIP fit of ``iters`` iterations, as ``fit`` does it minus extras."""
    y = torch.rand(1, 3, size, size, device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cache: dict[str, torch.nn.Module] = {}

    def run() -> None:
        net, z = build_network(dip.DIPConfig(channels=channels), 0, (size, size))
        net = net.to(device, memory_format=fmt)
        z = z.to(device).contiguous(memory_format=fmt)
        if compile_:  # compile once; later runs reuse the compiled graph with fresh weights
            model = cache.setdefault("model", torch.compile(net))
            model._orig_mod.load_state_dict(net.state_dict())
            net = model._orig_mod
        else:
            model = net
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(iters):
            out = model(z + torch.randn_like(z) / 30)
            loss = ((out - y) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            model(z).cpu()

    return run


def fit_loop(channels: int, size: int, iters: int, device: torch.device, batch: int = 1,
             **options) -> Callable[[], None]:
    y = torch.rand(batch, 3, size, size) if batch > 1 else torch.rand(3, size, size)

    def run() -> None:
        dip.fit(y, channels=channels, iterations=iters, device=device, progress=False,
                seed=0, **options)

    return run


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(runs: dict[str, Callable[[], None]], reps: int, iters: int, per: dict[str, int]
            ) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds per iteration of each run, interleaved over reps."""
    for fn in runs.values():
        fn()  # warm-up (and compilation)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(reps):
        for key, fn in runs.items():
            w, c = timed(fn)
            n = iters * per.get(key, 1)
            samples[key].append((w / n, c / n))
    return {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
            for k, v in samples.items()}


def row(label: str, t: tuple[float, float], ref: tuple[float, float] | None = None) -> str:
    ratio = "" if ref is None else f"{t[0] / ref[0]:6.3f} {t[1] / ref[1]:6.3f}"
    return f"| {label:<34} | {t[0] * 1e3:9.1f} | {t[1] * 1e3:9.1f} | {ratio:>13} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--iters", type=int, default=5, help="iterations per timed run")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed runs of each variant")
    p.add_argument("--batch", type=int, default=4, help="networks in the batched-fit row (0=skip)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow build)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default=None)
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"device {device}, {torch.get_num_threads()} threads, iters {args.iters}, "
          f"reps {args.reps}\n")
    print("| variant                            | wall ms/it |  cpu ms/it | ratio wall cpu |")
    print("|------------------------------------|-----------:|-----------:|---------------:|")
    for size in args.sizes:
        for ch in args.channels:
            it = args.iters
            default_cl = use_channels_last(dip.DIPConfig(channels=ch))
            runs = {
                "plain": plain_loop(ch, size, it, device, channels_last=default_cl),
                "fit": fit_loop(ch, size, it, device),
                "fit+wmv": fit_loop(ch, size, it, device, early_stopping="wmv",
                                    wmv_patience=10**6),
                "plain other-format": plain_loop(ch, size, it, device, not default_cl),
                "fit other-format": fit_loop(ch, size, it, device, channels_last=not default_cl),
                "fit autocast": fit_loop(ch, size, it, device, autocast=True),
            }
            if args.compile:
                runs["plain compiled"] = plain_loop(ch, size, it, device, default_cl, True)
                runs["fit compiled"] = fit_loop(ch, size, it, device, compile=True)
            t = compare(runs, args.reps, it, {})
            fmt = "channels_last" if default_cl else "contiguous"
            other = "contiguous" if default_cl else "channels_last"
            print(row(f"{ch}ch {size}px plain ({fmt})", t["plain"]))
            print(row(f"{ch}ch {size}px fit / plain", t["fit"], t["plain"]))
            print(row(f"{ch}ch {size}px fit+wmv / plain", t["fit+wmv"], t["plain"]))
            print(row(f"{ch}ch {size}px plain {other} / plain", t["plain other-format"],
                      t["plain"]))
            print(row(f"{ch}ch {size}px fit {other} / fit", t["fit other-format"], t["fit"]))
            print(row(f"{ch}ch {size}px fit autocast bf16 / fit", t["fit autocast"], t["fit"]))
            if args.compile:
                print(row(f"{ch}ch {size}px plain compiled / plain", t["plain compiled"],
                          t["plain"]))
                print(row(f"{ch}ch {size}px fit compiled / fit", t["fit compiled"], t["fit"]))
    if args.batch > 1:
        ch, size, n, it = 64, min(args.sizes), args.batch, args.iters
        seq = fit_loop(ch, size, it, device)

        def sequential() -> None:
            for _ in range(n):
                seq()

        t = compare({"sequential": sequential, "batched": fit_loop(ch, size, it, device, n)},
                    args.reps, it, {"sequential": n, "batched": n})
        print(row(f"{ch}ch {size}px {n} sequential, per image", t["sequential"]))
        print(row(f"{ch}ch {size}px {n} batched / sequential", t["batched"], t["sequential"]))


if __name__ == "__main__":
    main()
