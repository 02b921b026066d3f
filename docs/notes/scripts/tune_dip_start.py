"""DIP starts against the classical start at equal seconds, on held-out CBSD432 crops.

Can a cheaper or better-informed DIP start beat the classical start (biharmonic / bicubic) when
both get the same wall-clock?  On the 16 CBSD432 photos the prior never trained on (every 27th
in sorted order; image i degraded with seed i, every fit and chain seeded with i), each DIP
variant is fitted once and its running average kept at every ``--budgets`` iteration count:

* ``noise``: the library's DIP (``--channels``), noise input;
* ``informed``: the same with the classical restoration as the first channels of its input;
* ``lr``: the noise-input fit with ``--lr`` instead of 0.01.

Each snapshot is handed to the chain two ways: as the start and second observation
(``DIP->DDPM`` preset), and as a second observation on top of the classical start.  The
classical start itself runs at several chain lengths and as an average of several samples, so
that every DIP variant has a classical peer of at least its seconds.  The clean crop only scores.

    python docs/notes/scripts/tune_dip_start.py --data ../shared/data/train/CBSD432 \\
        --task inpaint \\
        --out docs/results/start/tuning/dip_vs_classical.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# examples/ (time_to_quality) and this folder (tune_classical_start) hold the helpers it reuses
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))

import torch  # noqa: E402
from time_to_quality import timed  # noqa: E402
from tune_classical_start import validation_crops  # noqa: E402

from dipprior import dip, metrics
from dipprior.diffusion import load_pretrained
from dipprior.dip import DIPConfig
from dipprior.experiments.data import degrade
from dipprior.operators import classical_start, make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.presets import method_configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the CBSD432 folder")
    p.add_argument("--task", default="inpaint")
    p.add_argument("--n-images", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--budgets", default="200,500")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--classical-steps", default="25,50,100")
    p.add_argument("--samples", default="2,4", help="classical start: average of N samples")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="JSON lines, appended (one line per crop)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained()
    crops = validation_crops(args.data, args.n_images, args.size)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    presets = method_configs(args.task)
    classical_cfg = presets["Classical->DDPM"]
    dip_chain = DIPInitializedSampler(model, scheduler, presets["DIP->DDPM"], progress=False)
    second = DIPInitializedSampler(model, scheduler, classical_cfg.replace(dip_observation=True),
                                   progress=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    factory = make_task(args.task)
    for i, (name, clean) in enumerate(crops.items()):
        op, y = degrade(clean, factory, i)
        row: dict = {"task": args.task, "image": name, "seed": i}

        def score(label: str, image: torch.Tensor, seconds: float, row: dict = row,
                  clean: torch.Tensor = clean) -> None:
            row[label] = {"psnr": round(metrics.psnr(image.clamp(0, 1), clean), 3),
                          "seconds": round(seconds, 2)}

        start, start_s = timed(classical_start, y, op)
        score("classical", start, start_s)
        for steps in [int(s) for s in args.classical_steps.split(",")]:
            s = DIPInitializedSampler(model, scheduler, classical_cfg.replace(steps=steps),
                                      progress=False)
            r, sec = timed(s, y, op, seed=i)
            score(f"classical->chain {steps}", r.image, sec)
        for n in [int(s) for s in args.samples.split(",")]:
            s = DIPInitializedSampler(model, scheduler, classical_cfg, progress=False)
            r, sec = timed(s, y.expand(n, *y.shape), op, seed=1000 * i)
            score(f"classical->chain avg{n}", r.image.mean(0), sec)
        variants = {"noise": ({}, None), "informed": ({}, start.clamp(0, 1)),
                    "lr": ({"lr": args.lr}, None)}
        for label, (fields, informed) in variants.items():
            cfg = DIPConfig(channels=args.channels, iterations=max(budgets), seed=i,
                            progress=False, **fields)
            kept: dict[int, tuple[torch.Tensor, float]] = {}
            began = time.perf_counter()

            def keep(state, kept=kept, began=began) -> None:
                if state.iteration + 1 in budgets:
                    kept[state.iteration + 1] = (state.image[0].detach().clone(),
                                                 time.perf_counter() - began)

            dip.fit(y, op, config=cfg, callback=keep, input_image=informed)
            for k, (image, fit_s) in kept.items():
                extra = start_s if informed is not None else 0.0
                score(f"DIP {label} {k}", image, fit_s + extra)
                r, sec = timed(dip_chain, y, op, seed=i, dip_image=image)
                score(f"DIP {label} {k}->chain", r.image, fit_s + extra + sec)
                r, sec = timed(second, y, op, seed=i, dip_image=image)
                score(f"classical+DIP {label} {k}->chain", r.image, fit_s + start_s + sec)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
