"""Every method on every image -> the paper table; paired differences between two methods."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from dipprior.experiments.data import Images, OperatorFactory
from dipprior.experiments.methods import Method, applies, image_of, run_method
from dipprior.experiments.runner import Case, DIPCache, run_over_images
from dipprior.metrics import ResultsTable, evaluate, results_table
from dipprior.operators import Operator

__all__ = ["COLUMNS", "compare", "paired_difference"]

COLUMNS = ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE", "Seconds"]


def compare(
    images: Images,
    operator: Operator | OperatorFactory,
    methods: Mapping[str, Method],
    *,
    seed: int = 0,
    share_dip: bool = True,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    on_result: Callable[[Case, str, torch.Tensor, Mapping[str, Any]], None] | None = None,
    progress: bool = True,
) -> ResultsTable:
    """Run every method on every degraded image and tabulate the scores.

    Args:
        images: clean [0, 1] images, a dict name -> (3, H, W) tensor or a list.
        operator: one operator for all images, or a factory ``(image, generator) -> operator``
            (e.g. a fresh random mask per image drawn from ``generator``).
        methods: name -> callable ``method(observation, operator, seed=...)`` returning a
            :class:`~dipprior.pipeline.SampleResult` or an image tensor, e.g. a
            :class:`~dipprior.pipeline.DIPInitializedSampler` (see :func:`standard_methods`).
            CBM3D is skipped on operators other than denoising.
        seed: image ``i`` is degraded with ``seed + i`` and each method is called with it.
        share_dip: DIP alone and DIP->DDPM with the same DIP config fit DIP once per image
            (fits are deterministic); the reused fit's seconds are added to each method's time.
        dip_cache: a :class:`DIPCache` (or its directory) to keep DIP fits across runs.
        on_result: called as ``on_result(case, method, image, row)`` after each method (the
            demo keeps its images and prints lines this way).
        progress: a bar over the images (the methods' own bars are theirs).

    Returns:
        A :class:`~dipprior.metrics.ResultsTable` with columns Image, Method, PSNR, SSIM, MSE,
        MAE, Delta E, NFE (diffusion model evaluations; 0 for DIP and CBM3D), Seconds (wall
        clock, including the DIP fit) and t0, per image in input order, then the per-method
        averages.
    """
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("methods: expected a non-empty dict name -> callable")
    for name, method in methods.items():
        if not callable(method):
            raise TypeError(f"methods: {name!r} is not callable")
    disk = DIPCache.of(dip_cache)

    def work(case: Case) -> list[dict[str, Any]]:
        fits: dict[str, tuple[torch.Tensor, float]] | None = {} if share_dip else None
        rows = []
        for mname, method in methods.items():
            if not applies(method, case.operator):
                continue
            result, seconds = run_method(method, case, fits, disk)
            image = image_of(result, mname)
            rows.append({"Image": case.name, "Method": mname, **evaluate(image, case.clean),
                         "NFE": int(getattr(result, "nfe", 0) or 0), "Seconds": seconds,
                         "t0": getattr(result, "t0", None)})
            if on_result is not None:
                on_result(case, mname, image, rows[-1])
        return rows

    rows = run_over_images(images, operator, seed, work, progress=progress, desc="compare")
    columns = COLUMNS + (["t0"] if any(r["t0"] is not None for r in rows) else [])
    return results_table(rows, columns, formats={"t0": ".1f"})


def paired_difference(table: ResultsTable, method: str, baseline: str,
                      metric: str = "PSNR") -> dict[str, Any]:
    """Per-image ``metric(method) - metric(baseline)`` from a :func:`compare` table.

    Returns ``{"per_image": {image: diff}, "mean": ..., "min": ..., "max": ..., "wins": n,
    "images": n}`` over the images that have both methods (``wins``: images where the method
    is strictly better).
    """
    values: dict[str, dict[str, float]] = {}
    for row in table.rows:
        if row["Image"] != "Average" and row.get("Method") in (method, baseline):
            values.setdefault(row["Image"], {})[row["Method"]] = float(row[metric])
    diffs = {img: v[method] - v[baseline] for img, v in values.items()
             if method in v and baseline in v}
    if not diffs:
        raise ValueError(f"table: no image has both {method!r} and {baseline!r}")
    d = np.array(list(diffs.values()))
    return {"per_image": diffs, "mean": float(d.mean()), "min": float(d.min()),
            "max": float(d.max()), "wins": int((d > 0).sum()), "images": len(d)}
