"""The compared methods and how one is run on one case (DIP fits shared between methods)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dipprior.experiments.runner import Case, DIPCache, fit_dip_cached
from dipprior.operators import TASKS
from dipprior.operators.registry import operator_for
from dipprior.pipeline import (
    CBM3DBaseline,
    ClassicalBaseline,
    DIPBaseline,
    DIPInitializedSampler,
    SamplerConfig,
)
from dipprior.pipeline.baselines import alone
from dipprior.pipeline.plan import settings_use_dip

__all__ = ["METHOD_LABELS", "Method", "classical_label", "run_method", "standard_methods"]

Method = Callable[..., Any]
# init -> the label used in every table and plot
METHOD_LABELS = {"dip": "DIP->DDPM", "noise": "DDPM", "observation": "Observation->DDPM",
                 "classical": "Classical->DDPM"}
WARM_START = SamplerConfig(steps=10)  # the paper table's warm starts: 10 steps from auto t0


def standard_methods(model: Callable[[torch.Tensor, torch.Tensor], Any], scheduler: Any, *,
                     sampler: SamplerConfig | None = None,
                     settings: Mapping[str, Any] | None = None,
                     ddpm_steps: int | None = None, dip: Any = None, cbm3d: bool = True,
                     classical: bool = True, task: str | None = None,
                     device: str | torch.device | None = None,
                     progress: bool = False) -> dict[str, Method]:
    """The methods of the paper table: DIP, DDPM (from noise), DIP->DDPM, Observation->DDPM,
    Classical->DDPM, the classical peer (``classical``; its label is the operator's
    ``classical_name`` for ``task``, else ``"Classical"``) and CBM3D (denoising only) when the
    optional ``bm3d`` package is installed and ``cbm3d``.

    Without ``sampler`` each diffusion method is the sampler a user gets with ``init=`` that
    start (the task's tuned preset, refined by the keyword ``settings``; DDPM with
    ``ddpm_steps``), so a row equals a direct call with the same seed; DIP and DIP->DDPM fit the
    same DIP stage (``dip``: a DIPConfig, or fields refining the task's default stage).  With a
    ``sampler`` config the warm starts run it whole (the paper table's: ``init`` changed per
    method, ``renoise="auto"``) and DDPM runs ``ddpm_steps`` (default 100) over the chain.
    """
    run = {"device": device, "progress": progress}
    if sampler is None:
        given = dict(settings or {})
        given.pop("init", None)

        def chain(init: str, **changes: Any) -> DIPInitializedSampler:
            keywords = {**given, **changes, "init": init}
            if init == "noise":  # from pure noise: its own steps, no t0, no DIP
                keywords = {k: v for k, v in keywords.items()
                            if k not in ("t0", "steps", "dip_observation")}
                keywords.update({} if ddpm_steps is None else {"steps": ddpm_steps})
            fits = settings_use_dip(None, keywords)  # the same DIP stage for every DIP user
            return DIPInitializedSampler(model, scheduler, **keywords, **run,
                                         **({"dip": dip} if fits else {}))

        methods: dict[str, Method] = {
            "DIP": DIPBaseline(dip, **run),
            "DDPM": chain("noise"),
            "DIP->DDPM": chain("dip"),
            "Observation->DDPM": chain("observation")}
        if task != "denoise":  # (for denoising the classical start is the observation)
            methods["Classical->DDPM"] = chain("classical")
    else:
        methods = {
            "DIP": DIPBaseline(dip, **run),
            "DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(
                init="noise", t0="auto", steps=ddpm_steps or 100, renoise="auto",
                dip_observation=False), **run),
            "DIP->DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(init="dip"),
                                               dip=dip, **run),
            "Observation->DDPM": DIPInitializedSampler(model, scheduler, sampler.replace(
                init="observation", renoise="auto", dip_observation=False), **run),
        }
        if task != "denoise":
            methods["Classical->DDPM"] = DIPInitializedSampler(model, scheduler, sampler.replace(
                init="classical", renoise="auto", dip_observation=False), **run)
    if classical and task != "denoise":
        methods[classical_label(task)] = ClassicalBaseline()
    if cbm3d:
        try:
            methods["CBM3D"] = CBM3DBaseline()
        except ImportError:
            pass
    return methods


def classical_label(task: str | None) -> str:
    """The classical peer's name in tables for a registered ``task`` (its operator's
    ``classical_name``), or ``"Classical"``."""
    if task is None or task not in TASKS:
        return "Classical"
    return operator_for(task, torch.zeros(3, 64, 64)).classical_name


def applies(method: Method, operator: Any) -> bool:
    """CBM3D only denoises, the classical peer never does (its peer there is CBM3D); every
    other method takes any operator."""
    if isinstance(method, CBM3DBaseline):
        return operator.identity
    if isinstance(method, ClassicalBaseline):
        return not operator.identity
    return True


def _dip_config(method: Method, case: Case) -> Any:
    """The DIP stage ``method`` fits on ``case``, where it can be shared (fitted once for every
    method with the same stage and seed); None: no DIP, or a fit only the method can do (one
    stopped by the prior's reference restoration)."""
    y, op = case.observation, case.operator
    if isinstance(method, DIPBaseline):
        return alone(method.dip, op)
    if isinstance(method, DIPInitializedSampler):
        plan = method.plan(y, op)[0]
        if plan.uses_dip and getattr(plan.dip, "early_stopping", None) != "reference":
            return plan.dip
    return None


def run_method(method: Method, case: Case, fits: dict[str, tuple[torch.Tensor, float]] | None,
               disk: DIPCache | None) -> tuple[Any, float]:
    """Call ``method`` on ``case`` -> ``(result, seconds)``; DIP-based methods share one fit per
    DIP stage through ``fits`` (its seconds are added to each)."""
    y, op = case.observation, case.operator
    config = _dip_config(method, case) if fits is not None else None
    if config is None:
        start = time.perf_counter()
        result = method(y, op, seed=case.seed)
        return result, time.perf_counter() - start
    key = repr(config)
    if key not in fits:
        fits[key] = fit_dip_cached(y, op, config, case.seed, disk, method.device,
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
