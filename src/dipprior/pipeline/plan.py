"""What a call will run, per image: the one place a call's settings are resolved.

:meth:`DIPInitializedSampler.plan <dipprior.pipeline.DIPInitializedSampler.plan>` returns a
:class:`Plan` per image; the sampler runs it, ``restore`` forecasts its cost, ``compare`` and the
demo label their rows by it.  Settings resolve in one order: a :class:`SamplerConfig` given whole
is used as is; otherwise the task's tuned preset (``pipeline.presets``: the recommended one, the
one of the ``init`` asked for, or the ``budget``'s point of the measured front) refined by the
keyword settings given.  Keywords refine a preset, never switch the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dipprior.operators import Operator
from dipprior.pipeline.adapt import PROBE_DRAWS
from dipprior.pipeline.config import SamplerConfig
from dipprior.pipeline.inputs import per_image, seeds_for, split
from dipprior.pipeline.presets import budget_config, method_configs_for, recommended_config
from dipprior.pipeline.result import SampleResult, stack_results
from dipprior.pipeline.start import resolve_t0
from dipprior.pipeline.tasks import default_dip_config, resolve_init

__all__ = ["Plan", "PRESET_OF_INIT", "resolve_settings", "settings_use_dip", "dip_stage",
           "uses_dip", "make_plan", "run_plans"]

#: the preset each ``init`` starts from (``pipeline.presets.method_configs``)
PRESET_OF_INIT = {"noise": "DDPM", "observation": "Observation->DDPM", "dip": "DIP->DDPM",
                  "classical": "Classical->DDPM", "callable": "Classical->DDPM"}


@dataclass(frozen=True)
class Plan:
    """What a call runs for one image.

    Attributes:
        config: the resolved sampler settings.
        dip: the :class:`~dipprior.dip.DIPConfig` of the DIP fit, None when no DIP runs.
        t0: the start timestep, or None where ``t0="auto"`` reads it from the start's error
            estimate at run time (a DIP or pseudo-inverse start).
        nfe: model evaluations of the chains and of a reference chain (an upper bound where
            ``t0`` is chosen at run time: ``min(steps, t0 + 1)`` steps per chain).
        dip_iterations: the most DIP iterations (0 without DIP).
        adapt_passes: forward and backward passes of a test-time adaptation, in NFE (0 without).
    """

    config: SamplerConfig
    dip: Any
    t0: int | None
    nfe: int
    dip_iterations: int
    adapt_passes: int

    @property
    def uses_dip(self) -> bool:
        return self.dip is not None

    @property
    def init(self) -> str:
        return self.config.init_kind


def uses_dip(config: SamplerConfig) -> bool:
    """Whether ``config`` fits DIP: as the start, or as a second observation on another start."""
    return config.init == "dip" or (config.dip_observation and config.init != "noise")


def settings_use_dip(config: SamplerConfig | None, overrides: Mapping[str, Any]) -> bool:
    """Whether these settings fit DIP for every task: a config's own rule, else only an
    ``init="dip"`` or a ``dip_observation=True`` asked for (no preset without them fits DIP)."""
    if config is not None:
        return uses_dip(config)
    init = overrides.get("init")
    return init == "dip" or (bool(overrides.get("dip_observation")) and init != "noise")


def resolve_settings(config: SamplerConfig | None, overrides: Mapping[str, Any],
                     budget: float | str | None, operator: Operator, pixels: int
                     ) -> SamplerConfig:
    """The settings of one image (see the module docstring); ``pixels``: the restored image's,
    for a budget in seconds."""
    if config is not None:
        return config.replace(init=resolve_init([operator])) if config.init == "auto" else config
    if budget is not None:
        return budget_config(operator, budget, pixels)
    changes = dict(overrides)
    init = changes.pop("init", "auto")
    if init == "auto":
        base = recommended_config(operator)
    else:
        kind = "callable" if callable(init) else init
        base = method_configs_for(operator)[PRESET_OF_INIT[kind]].replace(init=init)
    # a fresh-noise setting replaces the preset's other one (eta and zeta exclude each other)
    if "eta" in changes and "zeta" not in changes:
        changes["zeta"] = None
    if changes.get("zeta") is not None and "eta" not in changes:
        changes["eta"] = 0.0
    return base.replace(**changes)


def dip_stage(dip: Any, operator: Operator) -> Any:
    """The DIP fit of one image: ``dip`` as given (a :class:`~dipprior.dip.DIPConfig`), or the
    operator's default stage (:meth:`~dipprior.operators.Operator.dip_stage`) refined by
    ``dip`` given as a mapping of fields (or as is, for None)."""
    if dip is None or isinstance(dip, Mapping):
        base = default_dip_config(operator)
        return base.replace(**dip) if dip else base
    return dip


def planned_t0(config: SamplerConfig, scheduler: Any, operator: Operator) -> int | None:
    """The start timestep where it is known before running (see :class:`Plan`)."""
    T = scheduler.num_train_timesteps
    kind = config.init_kind
    if kind == "noise":
        return T - 1
    if config.t0 != "auto":
        return resolve_t0(config.t0, T)
    if kind in ("observation", "classical") and operator.identity:
        return int(scheduler.timestep_for_noise_level(2.0 * operator.noise_sigma))
    if kind == "classical" or (kind == "callable" and not operator.identity):
        return operator.classical_t0(T)
    return None


def make_plan(config: SamplerConfig, dip: Any, scheduler: Any, operator: Operator) -> Plan:
    """The :class:`Plan` of one image with resolved ``config`` and ``dip`` stage."""
    t0 = planned_t0(config, scheduler, operator)
    steps = config.steps_from(t0) if t0 is not None else config.steps
    fits = uses_dip(config)
    reference = 0  # the prior's own restoration, run first where the settings read it
    stops_by_reference = fits and getattr(dip, "early_stopping", None) == "reference"
    if stops_by_reference or (config.init != "noise" and config.error_estimate == "reference"):
        chain = config.replace(init="observation", adapt=None, dip_observation=False,
                               error_estimate="residual")
        reference = make_plan(chain, None, scheduler, operator).nfe
    adapt = config.adapt
    passes = 0
    if adapt is not None:  # an iteration: a forward and a backward pass (~3 NFE) per chain
        passes = 3 * adapt.iterations * adapt.batch * -(-steps // adapt.every)
        passes += 2 * PROBE_DRAWS if adapt.probe else 0  # the probe's two scorings
    return Plan(config=config, dip=dip if fits else None, t0=t0,
                nfe=config.samples * config.ensemble * steps + reference,
                dip_iterations=int(getattr(dip, "iterations", 0)) if fits else 0,
                adapt_passes=passes)


def same_settings(a: Plan, b: Plan) -> bool:
    """Whether two images can run in one batch: the same settings and DIP stage."""
    return a.config == b.config and a.dip == b.dip


def run_plans(fixed: Callable[[Plan], Any], plans: list[Plan], observation: torch.Tensor,
              operator: Any, seed: int, ground_truth: torch.Tensor | None,
              return_intermediates: bool, *, generator: torch.Generator | None,
              dip_image: torch.Tensor | None) -> SampleResult:
    """Run each image's plan with ``fixed(plan)`` (a sampler of those settings): one batch when
    the plans agree, else image by image (image ``i`` with its own seed, so the result equals N
    single calls); a batch that cannot be one tensor or mixes DIP is refused before any work."""
    if all(same_settings(p, plans[0]) for p in plans):
        return fixed(plans[0])(observation, operator, seed, ground_truth, return_intermediates,
                               generator=generator, dip_image=dip_image)
    ys, ops, batched = split(observation, operator)
    shapes = {tuple(op.input_shape(y.shape)) for y, op in zip(ys, ops, strict=True)}
    if len(shapes) > 1:
        raise ValueError(f"operator: the images of this batch restore to different shapes "
                         f"{sorted(shapes)}; one kind of task per call, or separate calls")
    if len({p.uses_dip for p in plans}) > 1:
        raise ValueError("operator: in this batch some images' settings fit DIP and others "
                         "do not; restore them in separate calls")
    n = len(ys)
    seeds = seeds_for(seed, generator, n)
    truths = per_image(ground_truth, n, "ground_truth")
    given = per_image(dip_image, n, "dip_image")
    results = [fixed(plans[i])(ys[i], ops[i], seeds[i], truths[i], return_intermediates,
                               dip_image=given[i]) for i in range(n)]
    return stack_results(results, batched).to(observation.device)
