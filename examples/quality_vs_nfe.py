"""PSNR against NFE and against seconds for the three starts: DIP, pure noise, observation.

Same data, degradations and options as ``compare_methods.py`` (whose argument parser it uses),
plus ``--steps-list``.  One DIP fit per image serves every step count (its seconds are counted
in each DIP->DDPM point).  Writes ``qvn_<task>.md`` / ``.csv`` / ``.png`` to ``--out``:

    python examples/quality_vs_nfe.py \\
        --data ../shared/data/test/CBSD68 --n-images 8 --size 128 --tasks denoise inpaint \\
        --dip-iterations 1000 --steps-list 1,2,5,10,20,50,100 --seed 0 --out results \\
        --dip-cache results/dip-cache
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_methods import header, parse_args, sampler_config, setup, write  # noqa: E402

from dipprior import experiments as ex  # noqa: E402
from dipprior.metrics import ResultsTable  # noqa: E402
from dipprior.operators import make_task  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument(
        "--steps-list", default="1,2,5,10,20,50,100", help="comma list of step counts"))
    steps = [int(s) for s in args.steps_list.split(",")]
    if args.quick:
        steps = [1, 3, 10]
    rank, world, model, scheduler, images, dip = setup(args)
    out = Path(args.out)
    for task in args.tasks:
        start = time.perf_counter()
        operator = make_task(task, sigma=args.sigma, keep=args.keep, factor=args.factor)
        rows = ex.quality_vs_nfe(images, operator, model, scheduler, steps=steps,
                                 sampler=sampler_config(args), dip=dip, seed=args.seed,
                                 dip_cache=args.dip_cache, device=args.device,
                                 progress=rank == 0)
        if rank != 0:
            continue
        columns = ["Method", "Steps", "NFE", "PSNR", "SSIM", "Seconds", "Images"]
        table = ResultsTable(columns, rows, {"NFE": ".1f", "PSNR": ".2f", "SSIM": ".4f",
                                             "Seconds": ".1f", "Steps": "d", "Images": "d"})
        text = (f"# quality vs NFE, {task}: {header(args, world)}\n\nDIP {args.dip_channels} "
                f"channels x {args.dip_iterations} iterations (seconds include the fit); warm "
                f"starts from t0={args.t0}; eta {args.eta}, lambda {args.lam}, "
                f"renoise {args.renoise}; wall "
                f"{time.perf_counter() - start:.0f} s\n\n" + table.to_markdown())
        print(text)
        write(out, f"qvn_{task}.md", text)
        table.to_csv(out / f"qvn_{task}.csv")
        try:
            ex.plot_quality_vs_nfe(rows, out / f"qvn_{task}.png",
                                   title=f"{task}, {len(images)} images {args.size}px")
            print(f"wrote {out / f'qvn_{task}.png'}")
        except ImportError as exc:
            print(f"no plot: {exc}")


if __name__ == "__main__":
    main()
