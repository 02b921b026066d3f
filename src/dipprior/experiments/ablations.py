"""The start-timestep ablation: DIP->DDPM from fixed t0 values and ``"auto"``, one DIP fit each."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from dipprior.experiments.data import Images, OperatorFactory
from dipprior.experiments.methods import WARM_START
from dipprior.experiments.runner import Case, DIPCache, fit_dip_cached, run_over_images
from dipprior.metrics import ResultsTable, evaluate, results_table
from dipprior.operators import Operator
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig, resolve_t0

__all__ = ["best_fixed_t0", "t0_ablation"]


def t0_ablation(
    images: Images,
    operator: Operator | OperatorFactory,
    model: Callable[[torch.Tensor, torch.Tensor], Any],
    scheduler: Any,
    *,
    t0s: Iterable[int | float | str] = (10, 20, 40, 80, 160, 320, "auto"),
    sampler: SamplerConfig = WARM_START,
    dip: Any = None,
    seed: int = 0,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ResultsTable:
    """DIP->DDPM from each start timestep in ``t0s`` (ints, strengths or ``"auto"``).

    ``sampler`` gives every other setting (its ``t0`` is replaced by each value).  One DIP fit
    per image serves all settings (the "DIP" rows, t0 empty).  Returns a table with Image,
    Method (``t0=<value>``, ``auto`` or ``DIP``), PSNR, SSIM, MSE, MAE, Delta E, NFE, t0 (the
    timestep used) and "Error std" (the auto estimate, [0, 1] scale), with per-setting averages.
    """
    t0s = list(t0s)
    if not t0s:
        raise ValueError("t0s: empty")
    for v in t0s:
        if v != "auto":
            resolve_t0(v, scheduler.num_train_timesteps)
    disk = DIPCache.of(dip_cache)

    def work(case: Case) -> list[dict[str, Any]]:
        dip_image, _ = fit_dip_cached(case.observation, case.operator, dip, case.seed, disk,
                                      device, progress)
        rows = [{"Image": case.name, "Method": "DIP", **evaluate(dip_image, case.clean),
                 "NFE": 0}]
        for v in t0s:
            run = DIPInitializedSampler(model, scheduler, sampler.replace(init="dip", t0=v),
                                        device=device, progress=False)
            r = run(case.observation, case.operator, seed=case.seed, dip_image=dip_image)
            rows.append({"Image": case.name, "Method": "auto" if v == "auto" else f"t0={v}",
                         **evaluate(r.image, case.clean), "NFE": r.nfe, "t0": r.t0,
                         "Error std": r.error_std})
        return rows

    rows = run_over_images(images, operator, seed, work, progress=progress, desc="t0_ablation")
    columns = ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE", "t0",
               "Error std"]
    return results_table(rows, columns, formats={"t0": ".1f", "Error std": ".4f"})


def best_fixed_t0(table: ResultsTable) -> dict[str, Any]:
    """Summarise a :func:`t0_ablation` table: the best fixed setting on average, the per-image
    oracle (best fixed setting per image, scored with the clean image -- for reporting only)
    and ``auto``'s mean PSNR and its gap to both.
    """
    per_image = [r for r in table.rows if r["Image"] != "Average"]
    avgs = {r["Method"]: r["PSNR"] for r in table.rows
            if r["Image"] == "Average" and r["Method"].startswith("t0=")}
    if not avgs:
        raise ValueError("table: no fixed t0 settings")
    best = max(avgs, key=avgs.get)
    names = list(dict.fromkeys(r["Image"] for r in per_image))
    oracle = []
    for name in names:
        fixed = [r["PSNR"] for r in per_image if r["Image"] == name
                 and r["Method"].startswith("t0=")]
        oracle.append(max(fixed))
    auto = [r["PSNR"] for r in per_image if r["Method"] == "auto"]
    out = {"best_fixed": best, "best_fixed_psnr": avgs[best],
           "oracle_psnr": float(np.mean(oracle))}
    if auto:
        out["auto_psnr"] = float(np.mean(auto))
        out["auto_minus_best_fixed"] = out["auto_psnr"] - avgs[best]
        out["auto_minus_oracle"] = out["auto_psnr"] - out["oracle_psnr"]
    return {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in out.items()}
