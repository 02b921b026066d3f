"""DIP-initialised reverse diffusion with data consistency (:class:`DIPInitializedSampler`).

The data flow of one call, top-down in :meth:`DIPInitializedSampler.__call__`::

    observation --DIP fit / classical / observation / noise--> initial image
                --plan_start--> t0, x_t0
                --reverse_diffusion (proximal data consistency each step)--> restored image

Scales: images and observations are in [0, 1]; the diffusion model works in [-1, 1]; the only
conversions are :func:`observation_to_model_scale` and :mod:`dipprior._tensor`'s two helpers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dipprior._seeds import ADAPT, stream_seed
from dipprior._tensor import Model, model_device, randn, to_image_scale, to_model_scale
from dipprior.diffusion.ensemble import SelfEnsemble
from dipprior.diffusion.sampling import reverse_diffusion
from dipprior.estimators import estimate_error_std
from dipprior.operators import Denoise, Operator
from dipprior.pipeline.adapt import Adaptation, check_rank
from dipprior.pipeline.checks import (
    check_arguments,
    check_budget_adapts,
    check_chains_fit,
    check_initial_image,
)
from dipprior.pipeline.config import SamplerConfig
from dipprior.pipeline.consistency import observation_to_model_scale, proximal_step
from dipprior.pipeline.grey import whiten_grey
from dipprior.pipeline.inputs import groups, per_image, sample_seed, seeds_for, split
from dipprior.pipeline.plan import (
    Plan,
    dip_stage,
    make_plan,
    resolve_settings,
    run_plans,
    settings_use_dip,
    uses_dip,
)
from dipprior.pipeline.presets import budget_config
from dipprior.pipeline.result import SampleResult
from dipprior.pipeline.start import (
    Start,
    forward_diffuse,
    plan_start,
    reference_error_std,
    resolve_t0,
)
from dipprior.pipeline.tasks import fit_dip, is_denoising

__all__ = ["DIPInitializedSampler"]

class DIPInitializedSampler:
    """Restore images with a diffusion prior whose reverse chain starts from a DIP fit.

    Args:
        model: any callable ``model(x, t)`` on the [-1, 1] scale with ``t`` an (N,) long
            tensor: a :class:`~dipprior.diffusion.UNet`, a diffusers ``UNet2DModel`` (its output
            object is unwrapped), in any floating dtype.  Its output type (epsilon, x0, v) is
            the scheduler's ``prediction_type``.
        scheduler: a :class:`~dipprior.diffusion.Scheduler`.
        config: a :class:`SamplerConfig` used as given for every call (keyword arguments
            change its fields).  Without it each image runs its task's tuned preset
            (:mod:`~dipprior.pipeline.presets`: the prior's one step from the observation for
            Gaussian denoising, the classical start with the mean of 4 chains otherwise), and
            keyword arguments refine that preset: ``steps=10`` is the task's preset with 10
            steps, ``init="dip"`` the task's tuned DIP start.  :meth:`plan` says what a call
            runs per image.
        budget: without a config, pick the start and chain from the measured quality-time
            front (:func:`~dipprior.pipeline.presets.budget_config`): seconds per image (scaled
            from 128x128 by the pixel count) or an effort, ``"fast"``, ``"balanced"`` or
            ``"best"``; None: the recommended setting.
        dip: the DIP stage, where the settings fit DIP: a :class:`~dipprior.dip.DIPConfig`
            used as given, or a mapping of its fields that refines the operator's default stage
            (:meth:`~dipprior.operators.Operator.dip_stage`: a short fit on noise-free tasks,
            one stopped by the prior's reference on noisy ones); None: that default stage.
            Given for settings that fit no DIP, it is an error.
        device: where the diffusion runs (None: the model's device, else CUDA if available).
        progress: show tqdm bars.

    Example:
        >>> import torch
        >>> from dipprior.diffusion import Scheduler, UNet
        >>> from dipprior.dip import DIPConfig
        >>> from dipprior.operators import Denoise
        >>> op = Denoise(25 / 255)
        >>> y = op.degrade(torch.rand(3, 16, 16), torch.Generator().manual_seed(0))
        >>> config = SamplerConfig(init="dip", steps=3, t0=40)  # run as given
        >>> sampler = DIPInitializedSampler(UNet(base_channels=8), Scheduler(), config,
        ...                                 dip=DIPConfig(iterations=5), progress=False)
        >>> result = sampler(y, op, seed=0)
        >>> result.image.shape, result.nfe, result.t0
        (torch.Size([3, 16, 16]), 3, 40)
    """

    def __init__(self, model: Model, scheduler: Any, config: SamplerConfig | None = None, *,
                 budget: float | str | None = None, dip: Any = None,
                 device: str | torch.device | None = None, progress: bool = True,
                 **overrides: Any) -> None:
        check_arguments(model, scheduler, config, overrides)
        # no config and no overrides: the tuned preset for each call's task (presets.py)
        self.recommended = config is None and not overrides
        if budget is not None:
            if not self.recommended:
                raise ValueError("budget: picks the settings itself; give a budget or a config "
                                 "(or keyword settings), not both")
            budget_config(Denoise(0.0), budget)  # a valid budget, checked before any work
        self.budget = budget
        T = scheduler.num_train_timesteps
        checked = (config or SamplerConfig()).replace(**overrides)  # each field valid
        if checked.init == "noise" and checked.t0 != "auto" \
                and resolve_t0(checked.t0, T) != T - 1:
            raise ValueError(f"t0: init='noise' starts from pure noise at T - 1 = {T - 1}; got "
                             f"t0={checked.t0!r} (use init='dip' or 'observation' to start lower)")
        if checked.t0 != "auto":
            resolve_t0(checked.t0, T)  # in range for this schedule
        if dip is not None and not isinstance(dip, Mapping) and not callable(
                getattr(dip, "replace", None)):
            raise TypeError(f"dip: expected a DIPConfig or a mapping of its fields, got "
                            f"{type(dip).__name__}")
        if checked.adapt is not None:
            check_rank(model, checked.adapt.rank)  # against the model, before anything is copied
        self.model, self.scheduler = model, scheduler
        # a config given whole runs as given; else presets per image, refined by overrides
        self.config = config.replace(**overrides) if config is not None else None
        self.overrides = dict(overrides) if config is None else {}
        self.dip = dip
        self.device, self.progress = device, progress

    def __repr__(self) -> str:
        if self.config is not None:
            return f"DIPInitializedSampler({self.config!r})"
        given = {"budget": self.budget} if self.budget is not None else self.overrides
        return f"DIPInitializedSampler(preset of each task, {given})"

    @property
    def init(self) -> str:
        """The start asked for: the config's, the keyword's, or ``"auto"`` (the task's)."""
        if self.config is not None:
            return self.config.init_kind
        init = self.overrides.get("init", "auto")
        return "callable" if callable(init) else init

    # -------------------------------------------------------------------- plan
    def plan(self, observation: torch.Tensor, operator: Operator | Sequence[Operator]
             ) -> list[Plan]:
        """What a call on ``observation`` runs, per image (:class:`~dipprior.pipeline.plan.
        Plan`: settings, DIP stage, ``t0``, NFE), without running it."""
        ys, ops, _ = split(observation, operator)
        return [self._plan(y, op) for y, op in zip(ys, ops, strict=True)]

    def _plan(self, y: torch.Tensor, op: Operator) -> Plan:
        pixels = math.prod(op.input_shape(y.shape)[-2:])  # the restored image's
        config = resolve_settings(self.config, self.overrides, self.budget, op, pixels)
        check_budget_adapts(self.model, config, self.budget)
        fits = uses_dip(config)
        if self.dip is not None and not fits and self.config is None:  # a keyword switched
            raise ValueError(f"dip: a DIP stage was given, but the settings for {op!r} fit no "
                             f"DIP (init={config.init_kind!r}); pass init='dip' (or "
                             "dip_observation=True) to use it")
        return make_plan(config, dip_stage(self.dip, op) if fits else None, self.scheduler, op)

    # -------------------------------------------------------------------- call
    def __call__(self, observation: torch.Tensor, operator: Operator | Sequence[Operator],
                 seed: int = 0, ground_truth: torch.Tensor | None = None,
                 return_intermediates: bool = False, *,
                 generator: torch.Generator | None = None,
                 dip_image: torch.Tensor | None = None) -> SampleResult:
        """Restore ``observation``: one image (3, H, W) or a batch (N, 3, H, W).

        ``operator`` is one operator for all images or a sequence of N (e.g. one mask each).
        A (N, 3, H, W) input (N >= 1) gives a (N, 3, H, W) image and per-image lists.
        Randomness: image ``i`` of a batch uses ``seed + i`` for its DIP fit and
        ``noise_seed(seed + i)`` for its diffusion noise (a stream apart from a degradation
        seeded with ``seed + i``), so a batch equals N single calls with the matching seeds;
        or pass a ``generator`` (it then draws the per-image seeds).  ``ground_truth`` only
        feeds the DIP fit's PSNR history (it never steers fitting, stopping or ``t0``).
        ``dip_image`` reuses earlier DIP reconstructions of the same observations (their
        seconds count as 0).  Images whose tasks need different settings (a batch mixing
        operators) run each with their own plan (:meth:`plan`).
        """
        ys, ops, batched = split(observation, operator)
        if not self._resolved:  # each image's plan, then run by samplers of fixed settings
            plans = [self._plan(y, op) for y, op in zip(ys, ops, strict=True)]
            return run_plans(self._fixed, plans, observation, operator, seed, ground_truth,
                             return_intermediates, generator=generator, dip_image=dip_image)
        n, cfg = len(ys), self.config
        dev = model_device(self.model, self.device)
        check_chains_fit(cfg.samples, n, max(math.prod(op.input_shape(y.shape)[-2:])
                                             for y, op in zip(ys, ops, strict=True)), dev,
                         cfg.ensemble)
        seeds = seeds_for(seed, generator, n)
        ys, ops, grey = whiten_grey(ys, ops, seeds)  # grey photos: noise the prior knows
        truths = per_image(ground_truth, n, "ground_truth")
        given = per_image(dip_image, n, "dip_image")
        began = time.perf_counter()

        # 0. the prior's own restoration of each observation, where the DIP stage or the error
        #    estimate uses it (a chain from the observation with these settings)
        refs, ref_nfe = [None] * n, [0] * n
        fits_dip = self.uses_dip and all(g is None for g in given)
        if (fits_dip and any(self._stops_by_reference(op) for op in ops)) or (
                cfg.init != "noise" and cfg.error_estimate == "reference"):
            refs, ref_nfe = self._references(ys, ops, seeds, dev)

        # 1. the DIP images (fitted or given) where the start or the second observation uses
        #    them, then the start images: DIP, classical, the observation or none (noise)
        dips, iterations = [None] * n, [None] * n
        if self.uses_dip:
            for i in range(n):
                dips[i], iterations[i] = self._dip_image(ys[i], ops[i], seeds[i], dev,
                                                         truths[i], given[i], refs[i])
        dip_seconds = time.perf_counter() - began if fits_dip else 0.0
        began_start = time.perf_counter()
        inits = [dips[i] if cfg.init == "dip" else self._initial_image(ys[i], ops[i])
                 for i in range(n)]
        start_seconds = time.perf_counter() - began_start

        # 2. where each image's chains start (``samples`` chains per image, image i's chain j
        #    at index i * samples + j), and their first noise draws
        starts = [plan_start(cfg, self.scheduler, ops[i], ys[i], inits[i], refs[i])
                  for i in range(n)]
        if self.uses_dip and cfg.init != "dip":  # the second observation's own error estimate
            starts = [dataclasses.replace(starts[i], error_std=(
                reference_error_std(dips[i], refs[i]) if cfg.error_estimate == "reference"
                else estimate_error_std(dips[i], ys[i], ops[i]))) for i in range(n)]
        of = [i for i in range(n) for _ in range(cfg.samples)]  # chain -> its image
        generators = [torch.Generator().manual_seed(sample_seed(seeds[i], c % cfg.samples))
                      for c, i in enumerate(of)]
        xs = [self._start_state(ys[i], ops[i], inits[i], starts[i], generators[c], dev)
              for c, i in enumerate(of)]

        # 3. the reverse chains, chains with the same timesteps in one batch
        began_diffusion = time.perf_counter()
        timesteps = [cfg.timesteps(self.scheduler, s.t0) for s in starts]
        x0s: list[torch.Tensor | None] = [None] * len(of)
        steps_log: list[list[dict[str, Any]]] = [[] for _ in of]
        chain_groups = groups([timesteps[i] for i in of])
        if cfg.adapt is not None:  # each image adapts a prior of its own: one image per batch
            chain_groups = [[c for c in g if of[c] == i] for g in chain_groups
                            for i in dict.fromkeys(of[c] for c in g)]
        adapted: dict[int, tuple[int, float, float | None]] = {}  # iterations, seconds, gain
        for group in chain_groups:
            i = of[group[0]]
            adaptation = (self._adaptation(ys[i], ops[i], seeds[i], dev)
                          if cfg.adapt is not None else None)
            out = self._diffuse(group, of, ys, ops, xs, timesteps[i], generators, dev,
                                steps_log if return_intermediates else None, dips, starts,
                                adaptation)
            if adaptation is not None:  # its model copy goes now, not with the call
                adapted[i] = (adaptation.iterations_run, adaptation.seconds, adaptation.gain)
            for j, c in enumerate(group):
                x0s[c] = out[j:j + 1]
        diffusion_seconds = time.perf_counter() - began_diffusion

        # 4. the result, shaped like the input
        k = cfg.samples  # the mean of each image's chains
        images = torch.cat([torch.cat([to_image_scale(x) for x in x0s[i * k:(i + 1) * k]])
                            .mean(0, keepdim=True) for i in range(n)]).to(observation.device)
        g = torch.tensor(grey, device=images.device)  # grey in, grey out
        images[g] = images[g].mean(1, keepdim=True).expand_as(images[g])
        result = SampleResult(
            image=images if batched else images[0],
            dip_image=(torch.stack(dips) if batched else dips[0]) if self.uses_dip else None,
            seconds={"dip": dip_seconds, "start": start_seconds,
                     "diffusion": diffusion_seconds,
                     "adapt": sum(seconds for _, seconds, _ in adapted.values()),
                     "total": time.perf_counter() - began})
        per_image_fields = {
            "t0": [s.t0 for s in starts],
            "nfe": [k * cfg.ensemble * len(t) + r
                    for t, r in zip(timesteps, ref_nfe, strict=True)],
            "error_std": [s.error_std for s in starts], "timesteps": timesteps,
            "dip_iterations": iterations,
            "adapt_iterations": [adapted[i][0] for i in range(n)] if adapted else None,
            "adapt_gain": [adapted[i][2] for i in range(n)] if adapted else None,
            "intermediates": steps_log[::k] if return_intermediates else None}  # chain 0
        for key, values in per_image_fields.items():
            setattr(result, key, values if batched or values is None else values[0])
        return result

    @property
    def _resolved(self) -> bool:
        """Whether this sampler's settings are fixed (a whole config, a concrete DIP stage)."""
        return (self.config is not None and self.config.init != "auto"
                and not isinstance(self.dip, Mapping))

    def _fixed(self, plan: Plan) -> DIPInitializedSampler:
        return DIPInitializedSampler(self.model, self.scheduler, plan.config, dip=plan.dip,
                                     device=self.device, progress=self.progress)

    # ---------------------------------------------------------------- stages
    @property
    def uses_dip(self) -> bool:
        """Whether a call fits DIP (or takes ``dip_image``): as the start, or as the second
        observation on top of another start.  Without a config the presets decide per task:
        only an ``init="dip"`` or ``dip_observation=True`` asked for fits DIP."""
        return settings_use_dip(self.config, self.overrides)

    def _stops_by_reference(self, op: Operator) -> bool:
        """Whether the DIP fit for ``op`` stops by the prior's reference restoration."""
        return self.uses_dip and getattr(dip_stage(self.dip, op), "early_stopping",
                                         None) == "reference"

    def _references(self, ys: list[torch.Tensor], ops: list[Operator], seeds: list[int],
                    dev: torch.device) -> tuple[list[torch.Tensor], list[int]]:
        """The chain from each observation with this sampler's settings -> (images, NFE)."""
        chain = DIPInitializedSampler(self.model, self.scheduler,
                                      self.config.replace(init="observation", adapt=None,
                                                          dip_observation=False,
                                                          error_estimate="residual"),
                                      device=dev, progress=False)
        out = [chain(y, op, seed=seed) for y, op, seed in zip(ys, ops, seeds, strict=True)]
        return [r.image for r in out], [int(r.nfe) for r in out]

    def _initial_image(self, y: torch.Tensor, op: Operator) -> torch.Tensor | None:
        """The start of a chain that does not start from DIP."""
        init = self.config.init
        if init == "noise":
            return None
        if init == "observation":
            return op.pseudo_inverse(y)
        if init == "classical":
            return op.classical(y)
        image = init(y, op)  # a caller's own start
        return check_initial_image(image, tuple(op.input_shape(y.shape)), "init").float()

    def _dip_image(self, y: torch.Tensor, op: Operator, seed: int, dev: torch.device,
                   truth: torch.Tensor | None, given: torch.Tensor | None,
                   reference: torch.Tensor | None) -> tuple[torch.Tensor, int | None]:
        """The DIP reconstruction: ``given`` (checked) or a fit -> ``(image, iterations)``."""
        if given is not None:
            return check_initial_image(given, tuple(op.input_shape(y.shape))), None
        image, result = fit_dip(y, op, dip_stage(self.dip, op), seed=seed, device=dev,
                                progress=self.progress, ground_truth=truth,
                                reference=reference if self._stops_by_reference(op) else None)
        return image, int(getattr(result, "iterations", 0)) or None

    def _start_state(self, y: torch.Tensor, op: Operator, init: torch.Tensor | None,
                     start: Start, generator: torch.Generator, dev: torch.device) -> torch.Tensor:
        shape = (1, *op.input_shape(y.shape))  # the image's shape, not the observation's
        noise = randn(shape, generator, dev)
        if init is None:
            return noise
        x0 = to_model_scale(init.to(dev)).unsqueeze(0)
        return forward_diffuse(self.scheduler, x0, noise, start.t0, start.present_std)

    def _adaptation(self, y: torch.Tensor, op: Operator, seed: int, dev: torch.device
                    ) -> Adaptation:
        """A LoRA copy of the prior for one image, and its adaptation hook."""
        adapt = self.config.adapt
        loss = adapt.loss if adapt.loss != "auto" else (
            "r2r" if is_denoising([op]) else "measurement")
        return Adaptation(self.model, self.scheduler, adapt, y.to(dev), op, loss,
                          torch.Generator().manual_seed(stream_seed(seed, ADAPT)))

    def _diffuse(self, group: list[int], of: list[int], ys: list[torch.Tensor],
                 ops: list[Operator], xs: list[torch.Tensor], timesteps: list[int],
                 generators: list[torch.Generator], dev: torch.device,
                 steps_log: list[list[dict[str, Any]]] | None,
                 dips: list[torch.Tensor | None], starts: list[Start],
                 adaptation: Adaptation | None = None) -> torch.Tensor:
        """The chains ``group`` (indices into ``xs``, ``generators``, ``steps_log``) in one
        batch; ``of[c]`` is chain ``c``'s image (its index into the per-image lists).  With an
        ``adaptation`` (all chains of one image) its adapted copy of the prior samples."""
        s, cfg = self.scheduler, self.config
        images = [of[c] for c in group]
        y_m = [observation_to_model_scale(ys[i].to(dev), ops[i]).unsqueeze(0) for i in images]
        second = None
        if cfg.dip_observation and self.uses_dip:  # the DIP image as a second observation
            second = ([to_model_scale(dips[i].to(dev)).unsqueeze(0) for i in images],
                      [max(2.0 * float(starts[i].error_std), 1e-4) for i in images])
        proximal = proximal_step(cfg.lam, s, [ops[i] for i in images], y_m, second)

        def record(step: dict[str, Any]) -> None:
            for j, i in enumerate(group):
                steps_log[i].append({"t": step["t"],
                                     "x0_hat": to_image_scale(step["x0_hat"][j]).cpu(),
                                     "x0": to_image_scale(step["x0"][j]).cpu()})

        model = adaptation.model if adaptation else self.model
        return reverse_diffusion(
            SelfEnsemble(model, cfg.ensemble) if cfg.ensemble > 1 else model, s,
            torch.cat([xs[i] for i in group]),
            timesteps, adapt=adaptation.hook if adaptation else None,
            consistency=proximal if cfg.guidance == "proximal" else None, eta=cfg.eta,
            zeta=cfg.zeta,
            generator=[generators[i] for i in group] if len(group) > 1 else generators[group[0]],
            callback=record if steps_log is not None else None, progress=self.progress)


