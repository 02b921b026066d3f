"""DIP->DDPM from fixed start timesteps and from t0="auto": how close does auto land?

Same data, degradations and options as ``compare_methods.py``, plus ``--t0s``.  One DIP fit per
image serves all settings; each runs ``min(--steps, t0 + 1)`` steps.  The summary names the best
fixed t0 on average and the per-image oracle (best fixed t0 per image, picked with the clean
image -- reported, never used) and auto's gap to both.  Writes ``t0_<task>.md`` / ``.csv``:

    python examples/t0_ablation.py \\
        --data ../shared/data/test/CBSD68 --n-images 8 --size 128 --tasks denoise inpaint \\
        --dip-iterations 1000 --steps 10 --t0s 5,10,20,40,80,160,320,auto --seed 0 \\
        --out results --dip-cache results/dip-cache
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_methods import header, parse_args, sampler_config, setup, write  # noqa: E402

from dipprior import experiments as ex  # noqa: E402
from dipprior.operators import make_task  # noqa: E402
from dipprior.pipeline import parse_t0  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument(
        "--t0s", default="5,10,20,40,80,160,320,auto", help="comma list: ints, strengths, auto"))
    t0s = [parse_t0(v) for v in args.t0s.split(",")]
    rank, world, model, scheduler, images, dip = setup(args)
    out = Path(args.out)
    for task in args.tasks:
        start = time.perf_counter()
        operator = make_task(task, sigma=args.sigma, keep=args.keep, factor=args.factor)
        table = ex.t0_ablation(images, operator, model, scheduler, t0s=t0s,
                               sampler=sampler_config(args), dip=dip, seed=args.seed,
                               dip_cache=args.dip_cache, device=args.device, progress=rank == 0)
        if rank != 0:
            continue
        s = ex.best_fixed_t0(table)
        auto_t0 = next(r["t0"] for r in table.rows
                       if r["Image"] == "Average" and r["Method"] == "auto")
        summary = (f"# t0 ablation, {task}: {header(args, world)}\n\nDIP {args.dip_channels} "
                   f"channels x {args.dip_iterations} iterations; up to {args.steps} steps; "
                   f"eta {args.eta}, lambda {args.lam}, renoise {args.renoise}; wall "
                   f"{time.perf_counter() - start:.0f} s\n\n"
                   f"- best fixed t0 on average: {s['best_fixed']} ({s['best_fixed_psnr']:.2f}"
                   f" dB); per-image oracle {s['oracle_psnr']:.2f} dB\n"
                   f"- auto (mean t0 {auto_t0:.1f}): {s['auto_psnr']:.2f} dB, "
                   f"{s['auto_minus_best_fixed']:+.2f} dB vs best fixed, "
                   f"{s['auto_minus_oracle']:+.2f} dB vs oracle\n\n")
        print(summary + table.to_markdown())
        write(out, f"t0_{task}.md", summary + table.to_markdown())
        table.to_csv(out / f"t0_{task}.csv")


if __name__ == "__main__":
    main()
