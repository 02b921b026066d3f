"""Where the reverse chain starts: small pure functions for ``t0`` and the start state ``x_t0``."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from dipprior.estimators import estimate_error_std
from dipprior.pipeline.config import SamplerConfig, is_int

__all__ = ["Start", "auto_t0", "classical_t0", "forward_diffuse", "plan_start",
           "reference_error_std", "resolve_t0"]

def resolve_t0(t0: int | float, num_train_timesteps: int) -> int:
    """An int timestep or a float strength in (0, 1] -> the int start timestep.

    A strength ``s`` maps to ``round(s * (T - 1))`` (Python's round, halves to even), so
    ``1.0`` is ``T - 1`` (pure noise, as SDEdit's strength 1).

    >>> resolve_t0(0.5, 1000), resolve_t0(1.0, 1000), resolve_t0(37, 1000)
    (500, 999, 37)
    """
    last = num_train_timesteps - 1
    if is_int(t0):
        if not 0 <= int(t0) <= last:
            raise ValueError(f"t0: timestep must be in [0, {last}], got {t0}")
        return int(t0)
    if isinstance(t0, numbers.Real) and not isinstance(t0, bool):
        if not (math.isfinite(float(t0)) and 0.0 < float(t0) <= 1.0):
            raise ValueError(f"t0: a float is a strength in (0, 1], got {t0}")
        return round(float(t0) * last)
    raise TypeError(f"t0: expected an int timestep, a float strength in (0, 1] or 'auto', "
                    f"got {t0!r}")


def auto_t0(scheduler: Any, error_std: float) -> int:
    """The timestep whose noise level matches an error std on the [0, 1] scale.

    The forward process at ``t`` adds noise of std ``noise_level(t)`` to ``x0`` (on the model's
    [-1, 1] scale, twice the [0, 1] scale), so an initial image with error std ``e`` looks like
    ``x0`` plus noise at the timestep whose noise level is ``2 e``.
    """
    return int(scheduler.timestep_for_noise_level(2.0 * float(error_std)))


def classical_t0(operator: Any, num_train_timesteps: int = 1000) -> int:
    """``t0="auto"`` for a classical (or the caller's own) start: the operator's tuned
    :meth:`~dipprior.operators.Operator.classical_t0` (for holes it grows with the holes'
    scale, blur and every other operator have their tuned value), scaled to ``T``.

    >>> from dipprior.operators import Inpaint, center_box_mask
    >>> classical_t0(Inpaint(center_box_mask((128, 128), 32)))
    200
    """
    return operator.classical_t0(num_train_timesteps)


@dataclass(frozen=True)
class Start:
    """Where one chain starts: ``t0``, the noise std the initial image already holds (model
    scale; the forward noise adds only what is missing) and the auto error estimate."""

    t0: int
    present_std: float = 0.0
    error_std: float | None = None


def reference_error_std(image: torch.Tensor, reference: torch.Tensor) -> float:
    """The RMS distance of ``image`` to ``reference`` on the [0, 1] scale: the error of ``image``
    as judged by a (better) reference restoration of the same observation."""
    return float((image.detach().float().cpu() - reference.detach().float().cpu())
                 .square().mean().sqrt())


def plan_start(config: SamplerConfig, scheduler: Any, operator: Any, observation: torch.Tensor,
               init_image: torch.Tensor | None, reference: torch.Tensor | None = None) -> Start:
    """Choose ``t0`` and the noise already present for one image (never looks at a clean one).

    * pure noise (``init_image`` None): ``T - 1``;
    * the observation of a denoising task (``A = I``; ``init="observation"`` or
      ``"classical"``): it already holds white noise of the known std, so ``t0`` (when
      ``"auto"``) is where the noise level matches it;
    * a classical or callable start of any other task: ``"auto"`` is :func:`classical_t0`;
    * otherwise (DIP image, pseudo-inverse): the estimated error (:func:`estimate_error_std`, or
      with ``error_estimate="reference"`` the distance to ``reference``) chooses an ``"auto"``
      ``t0`` and, with ``renoise="missing"``, counts as noise present.
    """
    T = scheduler.num_train_timesteps
    if init_image is None:
        return Start(T - 1)
    fixed = None if config.t0 == "auto" else resolve_t0(config.t0, T)
    renoise = config.renoise
    if renoise == "auto":
        renoise = "missing" if operator.noise_sigma > 0 else "full"
    kind = config.init_kind
    if kind in ("observation", "classical") and operator.identity:
        present = 2.0 * operator.noise_sigma
        t0 = fixed if fixed is not None else int(scheduler.timestep_for_noise_level(present))
        return Start(t0, present)
    if kind in ("classical", "callable") and fixed is None \
            and not (kind == "callable" and operator.identity):
        fixed = classical_t0(operator, T)
    error_std = None
    if fixed is None or renoise == "missing" or config.dip_observation:
        if config.error_estimate == "reference":
            if reference is None:
                raise ValueError("reference: error_estimate='reference' needs the reference "
                                 "restoration")
            error_std = reference_error_std(init_image, reference)
        else:
            error_std = estimate_error_std(init_image, observation, operator)
    present = 2.0 * error_std if renoise == "missing" else 0.0
    t0 = fixed if fixed is not None else auto_t0(scheduler, error_std)
    return Start(t0, present, error_std)


def forward_diffuse(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t0: int,
                    present_std: float = 0.0) -> torch.Tensor:
    """``x_t0`` from ``x0`` (model scale) that already holds noise of std ``present_std``.

    ``x_t = sqrt(abar) (x0 + sigma_t eps)``: only the missing variance
    ``sigma_t^2 - present_std^2`` is added (none when they match); ``present_std = 0`` is the
    usual forward process ``add_noise``.
    """
    if present_std == 0.0:
        return scheduler.add_noise(x0, noise, t0)
    abar = float(scheduler.alphas_cumprod[t0])
    extra = math.sqrt(max(float(scheduler.noise_level(t0)) ** 2 - present_std ** 2, 0.0))
    return abar ** 0.5 * (x0 + extra * noise)
