"""Which timesteps the prior trains on: uniform, or a mixture weighted towards low noise.

Restoration samplers start from ``t0`` of at most a few hundred (the noise of a DIP image or an
observation), while uniform sampling spends most training samples at higher ``t``.  A mixture
draws a share ``low_fraction`` of the timesteps uniformly from ``[0, low_max)`` and the rest
uniformly from ``[0, T)``, so the whole range keeps enough mass for sampling from pure noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["TimestepDistribution"]


@dataclass(frozen=True)
class TimestepDistribution:
    """A mixture of ``Uniform[0, low_max)`` (weight ``low_fraction``) and ``Uniform[0, T)``.

    ``TimestepDistribution()`` is plain uniform sampling (the DDPM recipe) and draws exactly
    what ``torch.randint(0, T, ...)`` draws, so older runs resume bitwise.

    Example:
        >>> d = TimestepDistribution(low_fraction=0.75, low_max=250)
        >>> round(float(d.probabilities(1000)[:250].sum()), 2)
        0.81
    """

    low_fraction: float = 0.0
    low_max: int = 250

    def __post_init__(self) -> None:
        if isinstance(self.low_fraction, bool) or not 0.0 <= float(self.low_fraction) < 1.0:
            raise ValueError(f"low_fraction must be in [0, 1) (some uniform mass must remain "
                             f"for sampling from pure noise), got {self.low_fraction!r}")
        if isinstance(self.low_max, bool) or not isinstance(self.low_max, int) or self.low_max < 1:
            raise ValueError(f"low_max must be an int >= 1, got {self.low_max!r}")

    @property
    def is_uniform(self) -> bool:
        return self.low_fraction == 0.0

    def check(self, num_train_timesteps: int) -> None:
        if self.low_max > num_train_timesteps:
            raise ValueError(f"low_max={self.low_max} exceeds num_train_timesteps="
                             f"{num_train_timesteps}")

    def sample(self, n: int, num_train_timesteps: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` int64 timesteps drawn with ``generator`` (on ``generator``'s device)."""
        T = num_train_timesteps
        if self.is_uniform:
            return torch.randint(0, T, (n,), generator=generator, device=device)
        u = torch.rand(n, generator=generator, device=device)
        t = torch.rand(n, generator=generator, device=device)
        high = torch.where(u < self.low_fraction, float(self.low_max), float(T))
        return (t * high).long().clamp_(max=T - 1)

    def probabilities(self, num_train_timesteps: int) -> torch.Tensor:
        """The exact probability of each timestep (float64, sums to 1)."""
        self.check(num_train_timesteps)
        p = torch.full((num_train_timesteps,), (1 - self.low_fraction) / num_train_timesteps,
                       dtype=torch.float64)
        p[: self.low_max] += self.low_fraction / self.low_max
        return p

    def to_config(self) -> dict[str, Any]:
        return asdict(self)
