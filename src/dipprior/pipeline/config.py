"""The sampler's settings as one frozen object, passed whole and varied with ``replace``."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

__all__ = ["SamplerConfig", "INITS", "GUIDANCES", "RENOISE", "parse_t0"]

INITS = ("dip", "noise", "observation")
GUIDANCES = ("proximal", None)
RENOISE = ("auto", "full", "missing")


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplerConfig:
    """How :class:`~dipprior.pipeline.DIPInitializedSampler` runs its reverse chain.

    Attributes:
        init: ``"dip"`` (the method), ``"noise"`` (DDPM from pure noise at ``T - 1``) or
            ``"observation"`` (the pseudo-inverse of the observation).
        t0: start timestep: an int in ``[0, T - 1]``, a float strength in (0, 1]
            (``round(strength * (T - 1))``) or ``"auto"`` (from an error estimate of the initial
            image, never from a clean image).  Ignored by ``init="noise"``.
        steps: the most reverse steps (model evaluations).  The one rule: a chain from ``t0``
            runs ``min(steps, t0 + 1)`` steps, for a fixed and an automatic ``t0`` alike.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like ancestral noise).
        guidance: ``"proximal"`` (each step ``x0 <- operator.proximal(x0_hat, y, rho_t)``) or
            ``None`` (plain SDEdit from the initial image).
        guidance_scale: DiffPIR's ``lambda`` as this library has always scaled it:
            ``rho_t = lambda / sigma_t^2`` with ``sigma_t`` the noise level of step ``t`` on the
            model's [-1, 1] scale (see ``docs/pipeline.md``).
        renoise: the DIP start: ``"full"`` forward noise of ``t0``, ``"missing"`` (count the
            initial image's estimated error as noise already present), or ``"auto"``
            (``"missing"`` for noisy observations, else ``"full"``).

    >>> SamplerConfig(steps=10).steps_from(4), SamplerConfig(steps=10).steps_from(40)
    (5, 10)
    """

    init: str = "dip"
    t0: int | float | str = "auto"
    steps: int = 50
    eta: float = 0.0
    guidance: str | None = "proximal"
    guidance_scale: float = 10.0
    renoise: str = "auto"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {self.init!r}")
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance: expected 'proximal' or None, got {self.guidance!r}")
        if self.renoise not in RENOISE:
            raise ValueError(f"renoise: expected one of {RENOISE}, got {self.renoise!r}")
        if not is_int(self.steps) or self.steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {self.steps!r}")
        if not (isinstance(self.eta, numbers.Real) and not isinstance(self.eta, bool)
                and math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta: expected a number >= 0, got {self.eta!r}")
        if not (isinstance(self.guidance_scale, numbers.Real)
                and not isinstance(self.guidance_scale, bool)
                and math.isfinite(self.guidance_scale) and self.guidance_scale > 0):
            raise ValueError(f"guidance_scale: expected a number > 0, got "
                             f"{self.guidance_scale!r}")
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
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))

    def steps_from(self, t0: int) -> int:
        """Reverse steps of a chain starting at ``t0``: ``min(steps, t0 + 1)``."""
        return min(self.steps, int(t0) + 1)

    def replace(self, **changes: object) -> SamplerConfig:
        """A copy with ``changes`` (``dataclasses.replace``, validated again)."""
        return dataclasses.replace(self, **changes)


def parse_t0(text: str) -> int | float | str:
    """``"auto"``, an int timestep (``"40"``) or a float strength (``"0.05"``) from text."""
    text = str(text).strip()
    if text == "auto":
        return text
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"t0: expected an int, a float strength or 'auto', got {text!r}") from None
