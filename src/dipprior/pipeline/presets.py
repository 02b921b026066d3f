"""The sampler settings of the compared methods, per task, as tuned on CBSD432 training crops.

Every value here was chosen on 128x128 crops of CBSD432 photos held out from the prior's
training (never on the test sets); ``docs/results.md`` has the grids and the numbers.  The
noise-free tasks (``"inpaint"``, ``"box"``, ``"sr"``) share the settings tuned on 50% random-pixel
inpainting; ``"denoise"`` was tuned at sigma = 25.
"""

from __future__ import annotations

import math

from dipprior.operators import TASKS
from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pipeline.config import SamplerConfig
from dipprior.pipeline.tasks import DIP_BUDGET, is_denoising

__all__ = ["CLASSICAL_MEAN", "DIP_BUDGET", "EFFORTS", "FRONT", "budget_config", "front_for",
           "method_configs", "method_configs_for", "recommended_config"]

_NOISE_FREE = {
    # DiffPIR from pure noise (its lam does not matter: noise-free data is a hard constraint)
    "DDPM": SamplerConfig(init="noise", steps=100, zeta=1.0),
    # DiffPIR's warm start from the pseudo-inverse (missing pixels 0)
    "Observation->DDPM": SamplerConfig(init="observation", t0=300, steps=25, zeta=1.0),
    # the method: the DIP image as start (auto t0) and as a second observation
    "DIP->DDPM": SamplerConfig(init="dip", steps=25, zeta=1.0, dip_observation=True),
    # the classical restoration (biharmonic, bicubic) as start, t0 from the tuned rule
    "Classical->DDPM": SamplerConfig(init="classical", steps=25, zeta=1.0),
}
# deblurring (noise 0.01 on [0, 1]): DiffPIR's data weight and fresh-noise fraction, tuned on
# 3 held-out CBSD432 crops for Gaussian std 2 and motion size 15 (lam 1/3/7/40, zeta 0.3/1; best
# for DiffPIR from noise and for the classical start alike: lam 3, zeta 1;
# docs/results/deblur/tuning/chains.jsonl)
_DEBLUR_DATA = {"lam": 3.0, "zeta": 1.0}
_DEBLUR = {name: config.replace(**_DEBLUR_DATA) for name, config in _NOISE_FREE.items()}
# the data settings a task adds to the noise-free front's points
_TASK_DATA = {"deblur": _DEBLUR_DATA}
_TUNED: dict[str, dict[str, SamplerConfig]] = {
    "denoise": {
        "DDPM": SamplerConfig(init="noise", steps=100, lam=7.0, zeta=0.3),
        # one step from the observation: the prior as a one-step MMSE denoiser
        "Observation->DDPM": SamplerConfig(init="observation", steps=1, lam=320.0),
        "DIP->DDPM": SamplerConfig(init="dip", steps=3, lam=320.0, error_estimate="reference",
                                   dip_observation=True),
        # the classical start of denoising is the observation: the same one step
        "Classical->DDPM": SamplerConfig(init="classical", steps=1, lam=320.0),
    },
    "inpaint": _NOISE_FREE,
    "box": _NOISE_FREE,
    "sr": _NOISE_FREE,
    "deblur": _DEBLUR,
}


def method_configs(task: str) -> dict[str, SamplerConfig]:
    """``{"DDPM", "Observation->DDPM", "DIP->DDPM", "Classical->DDPM"}`` -> their tuned
    :class:`SamplerConfig` for the registered task called ``task`` (a task without settings of
    its own gets the noise-free ones)."""
    if task in _TUNED:
        return dict(_TUNED[task])
    if task not in TASKS:
        raise ValueError(f"task: no tuned settings for {task!r}; expected one of "
                         f"{sorted(TASKS)}")
    return {name: config.replace(**_TASK_DATA.get(task, {}))
            for name, config in _NOISE_FREE.items()}


def method_configs_for(operator: object) -> dict[str, SamplerConfig]:
    """The tuned :class:`SamplerConfig` of each method for ``operator``'s task: its own when
    tuned (:attr:`~dipprior.operators.Operator.task`), the Gaussian-denoising ones for
    ``A = I`` with noise, else the noise-free ones (with the task's own data settings)."""
    if is_denoising([operator]):
        return dict(_TUNED["denoise"])
    return {name: _for_task(operator, config) for name, config in _NOISE_FREE.items()}


#: the noise-free default: the classical start, the mean of 4 chains of 25 steps (100 NFE, as
#: DiffPIR from noise, in one batch)
CLASSICAL_MEAN = _NOISE_FREE["Classical->DDPM"].replace(samples=4)


def recommended_config(operator: object) -> SamplerConfig:
    """What ``DIPInitializedSampler(model, scheduler)`` runs without a config: for Gaussian
    denoising (a noise level > 0 and ``A = I``) the prior's one step from the observation, for
    every other task the classical start (biharmonic, bicubic) with its tuned ``t0`` and the
    mean of 4 chains (:data:`CLASSICAL_MEAN`): each measured best for its task, the DIP start
    included (``docs/results.md``)."""
    if is_denoising([operator]):
        return _TUNED["denoise"]["Observation->DDPM"]
    return _for_task(operator, CLASSICAL_MEAN)


def _for_task(operator: object, config: SamplerConfig) -> SamplerConfig:
    """A noise-free setting as ``operator``'s task runs it (deblurring with its own data weight
    and fresh-noise fraction)."""
    return config.replace(**_TASK_DATA.get(getattr(operator, "task", ""), {}))


#: the named efforts of :func:`budget_config`, cheapest first
EFFORTS = ("fast", "balanced", "best")

#: denoising's ``best``: the prior adapted to the photo (20 R2R iterations, tuned on held-out
#: CBSD432 and ImageNet crops), then its one step ensembled over the 8 symmetries of the square
ADAPT_DENOISE = AdaptConfig(iterations=20)
#: the noise-free ``best`` of the tasks in :data:`ADAPTED_TASKS`: 5 Adam steps of the
#: measurement loss before every 5th reverse step
ADAPT_NOISE_FREE = AdaptConfig(iterations=5, every=5)
#: the noise-free tasks whose ``best`` adapts the prior: those where adapting gained on the
#: held-out crops (``docs/results.md``, "The budget front")
ADAPTED_TASKS = frozenset({"deblur"})

_ONE_STEP = _TUNED["denoise"]["Observation->DDPM"]
_NOISE_FREE_FRONT = (("fast", 1.0, _NOISE_FREE["Classical->DDPM"].replace(steps=10)),
                     ("balanced", 2.7, _NOISE_FREE["Classical->DDPM"]),
                     ("best", 9.7, CLASSICAL_MEAN))

#: The measured quality-time front per task (``docs/results.md``, "Which method for which task
#: and budget"): ``(effort, seconds per 128x128 image on the 2-core CPU, config)``, cheapest
#: first; each point measured better than every cheaper one on held-out crops.  ``"denoise"``
#: is Gaussian denoising, ``"noise-free"`` every other task but those with a front of their own.
FRONT: dict[str, tuple[tuple[str, float, SamplerConfig], ...]] = {
    "denoise": (("fast", 0.1, _ONE_STEP),
                ("balanced", 1.0, _ONE_STEP.replace(ensemble=8)),
                ("best", 7.9, _ONE_STEP.replace(ensemble=8, adapt=ADAPT_DENOISE))),
    "noise-free": _NOISE_FREE_FRONT,
    **{task: (*_NOISE_FREE_FRONT[:2],
              ("best", 18.0, CLASSICAL_MEAN.replace(adapt=ADAPT_NOISE_FREE)))
       for task in sorted(ADAPTED_TASKS)},
}


def front_for(operator: object) -> tuple[tuple[str, float, SamplerConfig], ...]:
    """The points of :data:`FRONT` that ``operator``'s task runs (before its data settings)."""
    if is_denoising([operator]):
        return FRONT["denoise"]
    task = getattr(operator, "task", "")  # Denoise(0.0) is noise-free: no denoising front
    return FRONT[task] if task in FRONT and task != "denoise" else FRONT["noise-free"]


def budget_config(operator: object, budget: float | str, pixels: int = 128 * 128
                  ) -> SamplerConfig:
    """The point of the measured front (:data:`FRONT`) for ``operator``'s task and a budget:
    an effort name (:data:`EFFORTS`) or seconds per image, the front's seconds scaled from
    128x128 to ``pixels``; the best point that fits, or the cheapest when none does.
    Deblurring takes the noise-free front's points (the same chains and seconds) with its own
    data weight and fresh-noise fraction.

    >>> import torch
    >>> from dipprior.operators import Inpaint
    >>> budget_config(Inpaint(torch.ones(8, 8)), "fast").steps
    10
    """
    front = front_for(operator)
    if isinstance(budget, str):
        if budget not in EFFORTS:
            raise ValueError(f"budget: expected seconds or one of {EFFORTS}, got {budget!r}")
        return _for_task(operator, next(c for effort, _, c in front if effort == budget))
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
            or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget: expected seconds > 0 or one of {EFFORTS}, got {budget!r}")
    scale = pixels / (128 * 128)
    fitting = [config for _, seconds, config in front if seconds * scale <= budget]
    return _for_task(operator, fitting[-1] if fitting else front[0][2])
