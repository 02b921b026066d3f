"""The compared methods and how one is run on one case (DIP fits shared between methods)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from dipprior.experiments.runner import Case, DIPCache, fit_dip_cached
from dipprior.pipeline import (
    CBM3DBaseline,
    ClassicalBaseline,
    DIPBaseline,
    DIPInitializedSampler,
    SamplerConfig,
)

__all__ = ["CLASSICAL_LABELS", "METHOD_LABELS", "Method", "run_method", "standard_methods"]

Method = Callable[..., Any]
# init -> the label used in every table and plot
METHOD_LABELS = {"dip": "DIP->DDPM", "noise": "DDPM", "observation": "Observation->DDPM",
                 "classical": "Classical->DDPM"}
#: the classical peer's label in tables, per task
CLASSICAL_LABELS = {"inpaint": "Biharmonic", "box": "Biharmonic", "sr": "Bicubic",
                    "deblur": "Wiener"}
WARM_START = SamplerConfig(steps=10)  # the paper table's warm starts: 10 steps from auto t0


def standard_methods(model: Callable[[torch.Tensor, torch.Tensor], Any], scheduler: Any, *,
                     sampler: SamplerConfig = WARM_START, ddpm_steps: int = 100,
                     dip: Any = None, cbm3d: bool = True, classical: bool = True,
                     task: str | None = None,
                     device: str | torch.device | None = None,
                     progress: bool = False) -> dict[str, Method]:
    """The methods of the paper table: DIP, DDPM (from noise), DIP->DDPM, Observation->DDPM,
    Classical->DDPM, the classical peer (``classical``: biharmonic for holes, bicubic for low
    resolution, labelled by ``task`` as in :data:`CLASSICAL_LABELS`, else ``"Classical"``) and
    CBM3D (denoising only) when the optional ``bm3d`` package is installed and ``cbm3d``.

    The warm starts run ``sampler`` (DIP->DDPM as given, Observation->DDPM and Classical->DDPM
    with that ``init`` and ``renoise="auto"``); DDPM runs ``ddpm_steps`` steps over the whole
    chain with the same eta and guidance.
    """
    run = {"device": device, "progress": progress}
    methods: dict[str, Method] = {
        "DIP": DIPBaseline(dip, **run),
        "DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(
            init="noise", t0="auto", steps=ddpm_steps, renoise="auto", dip_observation=False),
            **run),
        "DIP->DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(init="dip"),
                                           dip=dip, **run),
        "Observation->DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(
            init="observation", renoise="auto", dip_observation=False), **run),
    }
    if task != "denoise":  # (for denoising the classical start is the observation)
        methods["Classical->DDPM"] = DIPInitializedSampler(model, scheduler, sampler.replace(
            init="classical", renoise="auto", dip_observation=False), **run)
    if classical and task != "denoise":
        methods[CLASSICAL_LABELS.get(task or "", "Classical")] = ClassicalBaseline()
    if cbm3d:
        try:
            methods["CBM3D"] = CBM3DBaseline()
        except ImportError:
            pass
    return methods


def applies(method: Method, operator: Any) -> bool:
    """CBM3D only denoises, the classical peer never does (its peer there is CBM3D); every
    other method takes any operator."""
    if isinstance(method, CBM3DBaseline):
        return operator.identity
    if isinstance(method, ClassicalBaseline):
        return not operator.identity
    return True


def _dip_key(method: Method) -> str | None:
    """Methods that start with the same DIP fit share it (same config, same seed)."""
    if isinstance(method, DIPBaseline) or (
            isinstance(method, DIPInitializedSampler) and method.uses_dip):
        return repr(method.dip)
    return None


def run_method(method: Method, case: Case, fits: dict[str, tuple[torch.Tensor, float]] | None,
               disk: DIPCache | None) -> tuple[Any, float]:
    """Call ``method`` on ``case`` -> ``(result, seconds)``; DIP-based methods share one fit per
    DIP config through ``fits`` (its seconds are added to each)."""
    y, op = case.observation, case.operator
    key = _dip_key(method) if fits is not None else None
    if key is None:
        start = time.perf_counter()
        result = method(y, op, seed=case.seed)
        return result, time.perf_counter() - start
    if key not in fits:
        fits[key] = fit_dip_cached(y, op, method.dip, case.seed, disk, method.device,
                                   method.progress)
    dip_image, dip_seconds = fits[key]
    start = time.perf_counter()
    result = method(y, op, seed=case.seed, dip_image=dip_image)
    return result, time.perf_counter() - start + dip_seconds


def image_of(result: Any, name: str) -> torch.Tensor:
    """The restored image of a method's result (a SampleResult or a tensor), float on CPU."""
    image = result.image if hasattr(result, "image") else result
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"methods: {name!r} returned {type(result).__name__}; expected a "
                        f"SampleResult or an image tensor")
    return image.detach().float().cpu()
