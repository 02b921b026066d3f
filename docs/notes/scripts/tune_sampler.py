"""Grid search of the warm-start sampler's settings on *training* images (never the test set).

For every image (center crops of the first N images of ``--data``, degraded with seed + i as in
``compare_methods.py``) one DIP fit is made (or read from ``--dip-cache``); then every
combination of init, guidance lambda ("none" = plain SDEdit), steps, t0 and eta restores it.
The clean image only scores the results.  Writes ``tune_<task>.csv`` (one row per setting and
image) and ``tune_<task>.md`` (settings ranked by mean PSNR) to ``--out``:

    python docs/notes/scripts/tune_sampler.py --model src/dipprior/weights/cbsd432-small \\
        --data ../shared/data/train/CBSD432 --n-images 4 --size 128 --tasks denoise \\
        --dip-iterations 3000 --early-stopping discrepancy --lambdas none,1,3,10,30,100 \\
        --steps-list 5,10,20 --t0s auto --etas 0 --inits dip,observation --renoises full,missing \\
        --out runs/tune
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))  # compare_methods

from compare_methods import header, parse_args, setup, write  # noqa: E402

from dipprior import experiments as ex  # noqa: E402
from dipprior.metrics import psnr  # noqa: E402
from dipprior.operators import make_task  # noqa: E402
from dipprior.pipeline import (  # noqa: E402
    DIPInitializedSampler,
    SamplerConfig,
    parse_t0,
    resolve_t0,
)


def _options(p) -> None:
    p.add_argument("--lambdas", default="none,5,20,80,320",
                   help="comma list of DiffPIR lambdas (official code's scale); 'none' = no data "
                   "term (SDEdit)")
    p.add_argument("--steps-list", default="5,10,20", help="comma list of reverse steps")
    p.add_argument("--t0s", default="auto", help="comma list: ints, strengths, auto")
    p.add_argument("--etas", default="0", help="comma list of DDIM etas")
    p.add_argument("--inits", default="dip,observation", help="comma list: dip, observation")
    p.add_argument("--renoises", default="full", help="comma list: full, missing (DIP starts)")


def settings(args):
    """Every combination of the grid as a dict of :class:`SamplerConfig` fields."""
    lambdas = [None if v == "none" else float(v) for v in args.lambdas.split(",")]
    grid = itertools.product(args.inits.split(","), lambdas,
                             [int(v) for v in args.steps_list.split(",")],
                             [parse_t0(v) for v in args.t0s.split(",")],
                             [float(v) for v in args.etas.split(",")],
                             args.renoises.split(","))
    for init, lam, steps, t0, eta, renoise in grid:
        if init != "dip" and renoise != "full":
            continue  # only DIP starts estimate their own error
        yield {"init": init, "guidance": None if lam is None else "proximal",
               "lam": lam or 1.0, "steps": steps, "t0": t0, "eta": eta,
               "renoise": renoise}


def label(s: dict) -> str:
    lam = "none" if s["guidance"] is None else f"{s['lam']:g}"
    return (f"{s['init']} lambda={lam} steps={s['steps']} t0={s['t0']} eta={s['eta']:g} "
            f"renoise={s['renoise']}")


def main() -> None:
    args = parse_args(__doc__, _options)
    rank, world, model, scheduler, images, dip = setup(args)
    out = Path(args.out)
    T = scheduler.num_train_timesteps
    cache = ex.DIPCache.of(args.dip_cache)
    for task in args.tasks:
        start = time.perf_counter()
        operator = make_task(task, sigma=args.sigma, keep=args.keep, factor=args.factor)

        def work(case: ex.Case, task: str = task, start: float = start) -> list[dict]:
            dip_image, _ = ex.fit_dip_cached(case.observation, case.operator, dip, case.seed,
                                             cache, args.device, False)
            rows = [{"image": case.name, "setting": "DIP", "nfe": 0, "t0": "",
                     "psnr": psnr(dip_image.clamp(0, 1), case.clean)}]
            for s in settings(args):
                if s["init"] == "observation" and s["t0"] == "auto" and task != "denoise":
                    continue  # auto from the pseudo-inverse only makes sense for denoising
                if s["t0"] != "auto" and s["steps"] > resolve_t0(s["t0"], T) + 1:
                    continue  # a chain runs min(steps, t0 + 1) steps: not under a larger label
                sampler = DIPInitializedSampler(model, scheduler, SamplerConfig(**s),
                                                progress=False)
                r = sampler(case.observation, case.operator, seed=case.seed,
                            dip_image=dip_image)
                rows.append({"image": case.name, "setting": label(s), "nfe": r.nfe,
                             "t0": r.t0, "psnr": psnr(r.image, case.clean)})
            print(f"{case.name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
            return rows

        # image i is degraded with seed + i; under torchrun the images are split over ranks
        rows = ex.run_over_images(images, operator, args.seed, work, progress=False,
                                  desc="tune")
        if rank != 0:
            continue
        names = sorted({r["image"] for r in rows})
        by_setting: dict[str, list[dict]] = {}
        for r in rows:
            by_setting.setdefault(r["setting"], []).append(r)
        ranked = sorted(by_setting.items(),
                        key=lambda kv: -sum(r["psnr"] for r in kv[1]) / len(kv[1]))
        lines = [f"# sampler grid, {task}: {header(args, world)}", "",
                 f"DIP {args.dip_channels} channels, up to {args.dip_iterations} iterations, "
                 f"stopping {args.early_stopping}; wall {time.perf_counter() - start:.0f} s", "",
                 "| setting | mean PSNR | mean t0 | NFE | " + " | ".join(names) + " |",
                 "|---|---|---|---|" + "---|" * len(names)]
        for setting, rs in ranked:
            per = {r["image"]: r["psnr"] for r in rs}
            t0s = [r["t0"] for r in rs if r["t0"] != ""]
            mean_t0 = f"{sum(t0s) / len(t0s):.1f}" if t0s else ""
            lines.append(f"| {setting} | {sum(per.values()) / len(per):.2f} | {mean_t0} | "
                         f"{rs[0]['nfe']} | " + " | ".join(f"{per[n]:.2f}" for n in names) + " |")
        write(out, f"tune_{task}.md", "\n".join(lines) + "\n")
        buffer = io.StringIO()
        w = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write(out, f"tune_{task}.csv", buffer.getvalue())
        print("\n".join(lines[:40]))


if __name__ == "__main__":
    main()
