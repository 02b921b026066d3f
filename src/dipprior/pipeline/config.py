"""The sampler's settings as one frozen object, passed whole and varied with ``replace``."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from dipprior.diffusion.ensemble import ENSEMBLES, Ensemble
from dipprior.diffusion.scheduler import SPACINGS, Spacing
from dipprior.pipeline.adapt import AdaptConfig

__all__ = ["SamplerConfig", "INITS", "GUIDANCES", "RENOISE", "parse_t0",
           "rho_diffpir"]

# the string options, typed; the checks and the command line's choices read the same tuples
Init = Literal["auto", "dip", "noise", "observation", "classical"]
Renoise = Literal["auto", "full", "missing"]
ErrorEstimate = Literal["residual", "reference"]
INITS: tuple[str, ...] = get_args(Init)
GUIDANCES = ("proximal", None)
RENOISE: tuple[str, ...] = get_args(Renoise)
ERROR_ESTIMATES: tuple[str, ...] = get_args(ErrorEstimate)


def rho_diffpir(lam: float, noise_sigma: float, sigma_t: float) -> float:
    """DiffPIR's data weight ``rho_t = lam * noise_sigma^2 / sigma_t^2``.

    ``noise_sigma`` is the observation noise std on the [0, 1] image scale and ``sigma_t =
    sqrt(1 - abar_t) / sqrt(abar_t)`` the noise level of step ``t`` on the model's [-1, 1] scale,
    as in DiffPIR's official code; the data step is then
    ``argmin_x ||y - A x||^2 + rho_t ||x - x0_hat||^2`` (on either scale: both terms scale
    alike).  deepinv's ``DiffPIR(lambda_=...)`` weighs the same step with ``2 lambda_``, so its
    ``lambda_`` is ``lam / 2``.  Earlier versions of dipprior called ``lam / 4``
    ``guidance_scale``.

    >>> round(rho_diffpir(40.0, 25 / 255, 0.5), 6)
    1.537870
    """
    return float(lam) * float(noise_sigma) ** 2 / float(sigma_t) ** 2


RENAMED = ("guidance_scale was replaced by lam, DiffPIR's lambda on its official code's scale: "
           "lam = 4 * guidance_scale (guidance_scale=10 is lam=40)")


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplerConfig:
    """How :class:`~dipprior.pipeline.DIPInitializedSampler` runs its reverse chain.

    Attributes:
        init: ``"dip"`` (the method), ``"noise"`` (DDPM from pure noise at ``T - 1``),
            ``"observation"`` (the pseudo-inverse of the observation), ``"classical"`` (the
            classical restoration, :meth:`~dipprior.operators.Operator.classical`: biharmonic
            for holes, bicubic for low resolution, the observation for denoising), any callable
            ``(observation, operator) -> image`` (a start of the caller's own, used as given),
            or ``"auto"`` (``"observation"`` for Gaussian denoising, where it measured best,
            else ``"classical"``).
        t0: start timestep: an int in ``[0, T - 1]``, a float strength in (0, 1]
            (``round(strength * (T - 1))``) or ``"auto"`` (from an error estimate of the initial
            image, never from a clean image; for a classical or callable start, whose errors
            are smooth and invisible to that estimate, the tuned rule
            :func:`~dipprior.pipeline.start.classical_t0`).  Ignored by ``init="noise"``.
        steps: the most reverse steps (model evaluations).  The one rule: a chain from ``t0``
            runs ``min(steps, t0 + 1)`` steps, for a fixed and an automatic ``t0`` alike.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like ancestral noise).
        zeta: DiffPIR's fresh-noise fraction in [0, 1] (None: use ``eta``; give one of them).
        spacing: the timesteps between ``t0`` and 0: ``"uniform"`` or ``"quadratic"`` (DiffPIR's
            ``skip_type="quad"``, see :meth:`~dipprior.diffusion.Scheduler.timesteps`).
        guidance: ``"proximal"`` (each step ``x0 <- argmin ||y - A x||^2 + rho_t ||x - x0_hat||^2``)
            or ``None`` (plain SDEdit from the initial image).
        lam: DiffPIR's ``lambda`` on the scale of the paper's official code:
            ``rho_t = lam * sigma_n^2 / sigma_t^2`` (:func:`rho_diffpir`; deepinv's ``lambda_`` is
            ``lam / 2``).  Noise-free observations are a hard constraint whatever ``lam``.
        renoise: the DIP start: ``"full"`` forward noise of ``t0``, ``"missing"`` (count the
            initial image's estimated error as noise already present), or ``"auto"``
            (``"missing"`` for noisy observations, else ``"full"``).
        error_estimate: how the DIP image's error (for ``t0="auto"``, ``renoise="missing"`` and
            ``dip_observation``) is estimated without the clean image: ``"residual"``
            (:func:`~dipprior.estimators.estimate_error_std`, from the observation alone) or
            ``"reference"`` (the RMS distance to the prior's own restoration of the observation,
            a chain with ``init="observation"`` and these settings run first; its NFE count).
        dip_observation: use the DIP image, beyond the start, as a second observation of the
            whole image in every data step, with its estimated error as noise std
            (:mod:`dipprior.pipeline.consistency`).
        samples: run this many chains per image from the same start (their noise from streams
            of their own) and return their mean, an estimate of the posterior mean, which PSNR
            rewards; they run as one batch of model calls and count ``samples`` times in NFE.
        adapt: an :class:`~dipprior.pipeline.adapt.AdaptConfig` to fine-tune LoRA factors of
            (a copy of) the prior on each observation while its chain runs (DDIP / SCD: a Deep
            Image Prior inside the prior; recorrupted-to-recorrupted loss for Gaussian
            denoising), or None (the prior as trained).
        ensemble: average the prior's output at every step over this many symmetries of the
            square (:class:`~dipprior.diffusion.ensemble.SelfEnsemble`): 1 (the prior alone),
            2, 4 or 8 (all flips and quarter turns); an adapted prior is adapted once and
            then ensembled.  Counts ``ensemble`` times in NFE.

    >>> SamplerConfig(steps=10).steps_from(4), SamplerConfig(steps=10).steps_from(40)
    (5, 10)
    """

    init: Init | Callable[..., Any] = "dip"
    t0: int | float | str = "auto"
    steps: int = 50
    eta: float = 0.0
    zeta: float | None = None
    spacing: Spacing = "uniform"
    guidance: Literal["proximal"] | None = "proximal"
    lam: float = 40.0
    renoise: Renoise = "auto"
    error_estimate: ErrorEstimate = "residual"
    dip_observation: bool = False
    samples: int = 1
    adapt: AdaptConfig | None = None
    ensemble: Ensemble = 1

    def __post_init__(self) -> None:
        if not (callable(self.init) or (isinstance(self.init, str) and self.init in INITS)):
            raise ValueError(f"init: expected one of {INITS} or a callable (observation, "
                             f"operator) -> image, got {self.init!r}")
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance: expected 'proximal' or None, got {self.guidance!r}")
        if self.renoise not in RENOISE:
            raise ValueError(f"renoise: expected one of {RENOISE}, got {self.renoise!r}")
        if not is_int(self.steps) or self.steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {self.steps!r}")
        if not (isinstance(self.eta, numbers.Real) and not isinstance(self.eta, bool)
                and math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta: expected a number >= 0, got {self.eta!r}")
        if not (isinstance(self.lam, numbers.Real) and not isinstance(self.lam, bool)
                and math.isfinite(self.lam) and self.lam > 0):
            raise ValueError(f"lam: expected a number > 0, got {self.lam!r}")
        if self.zeta is not None:
            if not (isinstance(self.zeta, numbers.Real) and not isinstance(self.zeta, bool)
                    and 0.0 <= self.zeta <= 1.0):
                raise ValueError(f"zeta: expected None or a number in [0, 1], got {self.zeta!r}")
            if self.eta != 0:
                raise ValueError(f"zeta: give eta or zeta, not both (eta={self.eta}, "
                                 f"zeta={self.zeta})")
            object.__setattr__(self, "zeta", float(self.zeta))
        if self.error_estimate not in ERROR_ESTIMATES:
            raise ValueError(f"error_estimate: expected one of {ERROR_ESTIMATES}, got "
                             f"{self.error_estimate!r}")
        if not isinstance(self.dip_observation, bool):
            raise TypeError(f"dip_observation: expected a bool, got {self.dip_observation!r}")
        if not is_int(self.samples) or self.samples < 1:
            raise ValueError(f"samples: expected an int >= 1, got {self.samples!r}")
        if self.adapt is not None and not isinstance(self.adapt, AdaptConfig):
            raise TypeError(f"adapt: expected None or an AdaptConfig, got "
                            f"{type(self.adapt).__name__}")
        if not is_int(self.ensemble) or self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble: expected one of {ENSEMBLES}, got {self.ensemble!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing: expected one of {SPACINGS}, got {self.spacing!r}")
        t0 = self.t0
        if isinstance(t0, str):
            if t0 != "auto":
                raise ValueError(f"t0: expected an int, a float strength or 'auto', got {t0!r}")
        elif is_int(t0):
            if int(t0) < 0:
                raise ValueError(f"t0: timestep must be >= 0, got {t0}")
        elif isinstance(t0, numbers.Real) and not isinstance(t0, bool):
            if not (math.isfinite(float(t0)) and 0.0 < float(t0) <= 1.0):
                raise ValueError(f"t0: a float is a strength in (0, 1], got {t0}")
        else:
            raise TypeError(f"t0: expected an int timestep, a float strength in (0, 1] or "
                            f"'auto', got {t0!r}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "lam", float(self.lam))

    @property
    def init_kind(self) -> str:
        """``init`` as a name: ``"callable"`` for a caller's start function."""
        return "callable" if callable(self.init) else str(self.init)

    def steps_from(self, t0: int) -> int:
        """Reverse steps of a chain starting at ``t0``: ``min(steps, t0 + 1)``."""
        return min(self.steps, int(t0) + 1)

    def timesteps(self, scheduler: object, t0: int) -> list[int]:
        """The timesteps of a chain from ``t0``: ``steps_from(t0)`` of them with this spacing."""
        return scheduler.timesteps(self.steps_from(t0), start=int(t0),  # type: ignore[attr-defined]
                                   spacing=self.spacing).tolist()

    def replace(self, **changes: object) -> SamplerConfig:
        """A copy with ``changes`` (``dataclasses.replace``, validated again)."""
        return dataclasses.replace(self, **changes)


_dataclass_init = SamplerConfig.__init__


@functools.wraps(_dataclass_init)
def _init(self: SamplerConfig, *args: Any, **kwargs: Any) -> None:
    # the generated __init__ would only say "unexpected keyword"; say what replaced it
    if "guidance_scale" in kwargs:
        raise TypeError(RENAMED)
    _dataclass_init(self, *args, **kwargs)


SamplerConfig.__init__ = _init  # type: ignore[method-assign]


def parse_t0(text: str) -> int | float | str:
    """``"auto"``, an int timestep (``"40"``) or a float strength (``"0.05"``) from text."""
    text = str(text).strip()
    if text == "auto":
        return text
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"t0: expected an int, a float strength or 'auto', got {text!r}") from None
