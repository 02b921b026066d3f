"""Quality against model evaluations and wall-clock for the three initialisations."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from dipprior.experiments.data import Images, OperatorFactory
from dipprior.experiments.methods import METHOD_LABELS
from dipprior.experiments.runner import Case, DIPCache, fit_dip_cached, run_over_images
from dipprior.metrics import evaluate
from dipprior.operators import Operator
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig

__all__ = ["quality_vs_nfe"]

DEFAULT = SamplerConfig()


def quality_vs_nfe(
    images: Images,
    operator: Operator | OperatorFactory,
    model: Callable[[torch.Tensor, torch.Tensor], Any],
    scheduler: Any,
    *,
    steps: Iterable[int] = (1, 2, 5, 10, 20, 50, 100),
    inits: Iterable[str] = ("dip", "noise", "observation"),
    sampler: SamplerConfig = DEFAULT,
    dip: Any = None,
    seed: int = 0,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """PSNR (and SSIM) against NFE and seconds for each initialisation, averaged over images.

    ``sampler`` gives t0, eta, guidance and renoise (renoise applies to the DIP start only);
    its ``steps`` is replaced by each value of ``steps``.  One DIP fit per image serves every
    ``steps`` value of ``init="dip"``; its seconds are included in that method's time.  A chain
    from ``t0`` runs ``min(steps, t0 + 1)`` steps (the NFE column says what was run), and
    settings that repeat an earlier one are dropped.

    Returns:
        Rows ``{"Method", "Steps", "NFE", "PSNR", "SSIM", "Seconds", "Images"}``, one per
        method and distinct requested ``steps``, means over the images ("NFE" is the mean NFE
        actually run, so a warm start with an auto ``t0`` may run fewer steps on some images).
        With ``"dip"`` in ``inits`` the first row is DIP alone (Steps and NFE 0).
    """
    steps = sorted({int(s) for s in steps})
    inits = list(inits)
    for init in inits:
        if init not in METHOD_LABELS:
            raise ValueError(f"inits: unknown init {init!r}; expected {list(METHOD_LABELS)}")
    if not steps or steps[0] < 1:
        raise ValueError(f"steps: expected positive ints, got {steps}")
    disk = DIPCache.of(dip_cache)

    def work(case: Case) -> list[dict[str, Any]]:
        rows = []
        dip_image, dip_seconds = None, 0.0
        if "dip" in inits:
            dip_image, dip_seconds = fit_dip_cached(case.observation, case.operator, dip,
                                                    case.seed, disk, device, progress)
            rows.append({"Method": "DIP", "Steps": 0, "NFE": 0,
                         **_scores(dip_image.clamp(0, 1), case.clean), "Seconds": dip_seconds})
        for init in inits:
            config = sampler.replace(init=init, renoise=sampler.renoise if init == "dip"
                                     else "auto", t0="auto" if init == "noise" else sampler.t0)
            for n in steps:
                run = DIPInitializedSampler(model, scheduler, config.replace(steps=n),
                                            device=device, progress=False)
                r = run(case.observation, case.operator, seed=case.seed, dip_image=dip_image)
                extra = dip_seconds if init == "dip" else 0.0
                rows.append({"Method": METHOD_LABELS[init], "Steps": n, "NFE": r.nfe,
                             **_scores(r.image, case.clean),
                             "Seconds": r.seconds["total"] + extra})
        return rows

    per_image = run_over_images(images, operator, seed, work, progress=progress,
                                desc="quality_vs_nfe")
    return _average(per_image, inits, steps)


def _scores(image: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    m = evaluate(image.detach().float().cpu(), clean)
    return {"PSNR": float(m["psnr"]), "SSIM": float(m["ssim"])}


def _average(per_image: list[dict[str, Any]], inits: list[str], steps: list[int]
             ) -> list[dict[str, Any]]:
    """Means over images per (method, steps); a setting whose per-image NFE repeat an earlier
    one's (every image already clamped to ``t0 + 1`` steps) is dropped."""
    rows = []
    dip_rows = [r for r in per_image if r["Method"] == "DIP"]
    if dip_rows:  # the reference: DIP alone, NFE 0
        rows.append({"Method": "DIP", "Steps": 0, "NFE": 0.0,
                     **{k: float(np.mean([r[k] for r in dip_rows]))
                        for k in ("PSNR", "SSIM", "Seconds")}, "Images": len(dip_rows)})
    for init in inits:
        label = METHOD_LABELS[init]
        seen_nfe: set[tuple[int, ...]] = set()
        for n in steps:
            group = [r for r in per_image if r["Method"] == label and r["Steps"] == n]
            if not group:
                continue
            nfes = tuple(r["NFE"] for r in group)
            if nfes in seen_nfe:
                continue
            seen_nfe.add(nfes)
            rows.append({"Method": label, "Steps": n, "NFE": float(np.mean(nfes)),
                         **{k: float(np.mean([r[k] for r in group]))
                            for k in ("PSNR", "SSIM", "Seconds")}, "Images": len(group)})
    return rows
