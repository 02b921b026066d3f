"""The DDPM/DDIM noise schedule and reverse step, numerically matching diffusers: a
:class:`Scheduler` holds no network, knows the forward process ``x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps`` and takes one reverse step from a model's output, on the [-1, 1] scale.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from dipprior._tensor import randn

__all__ = ["Scheduler", "SchedulerOutput"]

BetaSchedule = Literal["linear", "scaled_linear", "cosine"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]
Spacing = Literal["uniform", "quadratic"]
BETA_SCHEDULES, PREDICTION_TYPES, SPACINGS = (get_args(t) for t in (BetaSchedule, PredictionType,
                                                                   Spacing))
# our schedule name -> diffusers' name (to_config writes diffusers' names, from_config reads both)
_DIFFUSERS_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear",
                       "cosine": "squaredcos_cap_v2"}
_SCHEDULE_ALIASES = {**{name: name for name in BETA_SCHEDULES}, "squaredcos_cap_v2": "cosine"}
_CONFIG_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                "prediction_type", "clip_sample", "clip_sample_range")

TimestepLike = int | torch.Tensor


@dataclass
class SchedulerOutput:
    """Result of :meth:`Scheduler.step`.

    Attributes:
        prev_sample: ``x_{prev_t}``, the input to the next step (``x0`` after the final step).
        pred_original_sample: the (clipped, if ``clip_sample``) prediction of ``x0``.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


# far above any schedule in use (DDPM: 1000), low enough to refuse absurd configs cheaply
MAX_TIMESTEPS = 100_000

def _cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule, as diffusers' ``squaredcos_cap_v2``."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
             for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


class Scheduler:
    """DDPM noise schedule with a DDIM reverse step for any ``eta`` (``eta=1`` is DDPM ancestral).

    Args:
        num_train_timesteps: ``T``; timesteps run ``0 .. T-1``.
        beta_schedule: ``"linear"``, ``"scaled_linear"`` or ``"cosine"`` (Nichol & Dhariwal, betas
            capped at 0.999; diffusers calls it ``"squaredcos_cap_v2"``, accepted as an alias).
        beta_start, beta_end: end points of the (scaled) linear schedules.
        prediction_type: what the model predicts: ``"epsilon"``, ``"sample"`` (x0) or
            ``"v_prediction"`` (``v = sqrt(abar) eps - sqrt(1 - abar) x0``).
        clip_sample: clamp the predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: see ``clip_sample``.

    The schedule is computed in float32 exactly as diffusers does and stored as float64 CPU
    tensors ``betas``, ``alphas`` and ``alphas_cumprod``; step coefficients are float64.
    ``step`` follows diffusers' ``DDIMScheduler`` with ``set_alpha_to_one=True`` (stepping to
    ``prev_t < 0`` means ``abar_prev = 1``, i.e. the output is the predicted x0) and
    ``use_clipped_model_output=False`` (the noise direction comes from the unclipped output).

    Example:
        >>> s = Scheduler()
        >>> x = torch.randn(1, 3, 8, 8)
        >>> ts = s.timesteps(10).tolist()
        >>> for t, prev in zip(ts, ts[1:] + [-1]):
        ...     x = s.step(torch.zeros_like(x), t, x, prev_t=prev).prev_sample
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaSchedule = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: PredictionType = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int):
            raise TypeError(f"num_train_timesteps must be an int, got {num_train_timesteps!r}")
        if not 2 <= num_train_timesteps <= MAX_TIMESTEPS:
            raise ValueError(f"num_train_timesteps must be in [2, {MAX_TIMESTEPS}], got "
                             f"{num_train_timesteps}")
        if beta_schedule not in _SCHEDULE_ALIASES:
            raise ValueError(
                f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end),
                            ("clip_sample_range", clip_sample_range)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}")
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = _SCHEDULE_ALIASES[beta_schedule]
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.prediction_type = prediction_type
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)

        # float32 exactly as diffusers computes it, so the numbers agree to the last bit
        T, f32 = num_train_timesteps, torch.float32
        if self.beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=f32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=f32) ** 2
        else:
            betas = _cosine_betas(T).to(f32)
        alphas = 1.0 - betas
        self.betas = betas.double()
        self.alphas = alphas.double()
        self.alphas_cumprod = torch.cumprod(alphas, dim=0).double()
        # python floats: indexing these is far cheaper than indexing a tensor in the sampling loop
        self._abar = self.alphas_cumprod.tolist()
        self._sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    # ------------------------------------------------------------------ config
    def to_config(self) -> dict[str, Any]:
        """The config with diffusers' key names (``DDIMScheduler.from_config`` accepts it)."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": _DIFFUSERS_SCHEDULE[self.beta_schedule],
            "prediction_type": self.prediction_type,
            "clip_sample": self.clip_sample,
            "clip_sample_range": self.clip_sample_range,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Scheduler:
        """Build from :meth:`to_config` output or a diffusers DDPM/DDIM scheduler config.

        Keys that do not change the numbers used here (``set_alpha_to_one``, ``steps_offset``,
        ``timestep_spacing``, ``_class_name``, ...) are ignored; options this scheduler cannot
        reproduce (``trained_betas``, ``thresholding``, ``rescale_betas_zero_snr``) raise.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        for key in ("trained_betas", "thresholding", "rescale_betas_zero_snr"):
            if config.get(key):
                raise ValueError(f"config option {key}={config[key]!r} is not supported")
        return cls(**{k: config[k] for k in _CONFIG_KEYS if k in config})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items())
        return f"Scheduler({args})"

    # --------------------------------------------------------------- helpers
    def _check_t(self, t: int, name: str = "t") -> int:
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(
                f"{name} must be in [0, {self.num_train_timesteps - 1}], got {t}")
        return t

    def _abar_of(self, t: TimestepLike, x: torch.Tensor) -> float | torch.Tensor:
        """``abar_t``: a float for a scalar t, a tensor broadcastable to ``x`` for an (N,) t."""
        if isinstance(t, torch.Tensor):
            if t.numel() == 1:
                return self._abar[self._check_t(int(t.item()))]
            if t.dim() != 1 or t.shape[0] != x.shape[0]:
                raise ValueError(
                    f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
            if int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps:
                raise ValueError(f"t must be in [0, {self.num_train_timesteps - 1}]")
            abar = self.alphas_cumprod.to(x.device)[t.to(x.device).long()].to(x.dtype)
            return abar.view(-1, *([1] * (x.dim() - 1)))
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"t must be an int or a tensor, got {type(t).__name__}")
        return self._abar[self._check_t(int(t))]

    # ---------------------------------------------------------- forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; ``t`` an int or an (N,) tensor."""
        if x0.shape != noise.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        a = self._abar_of(t, x0)
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: TimestepLike) -> torch.Tensor:
        """``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0`` (Salimans & Ho), as in diffusers."""
        a = self._abar_of(t, x0)
        return a**0.5 * noise - (1 - a) ** 0.5 * x0

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor,
                        t: TimestepLike) -> torch.Tensor:
        """The model's target for ``add_noise(x0, noise, t)`` given ``prediction_type``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        return self.get_velocity(x0, noise, t)

    # ------------------------------------------------------ output conversions
    def pred_x0(self, model_output: torch.Tensor, t: TimestepLike,
                x_t: torch.Tensor) -> torch.Tensor:
        """The model's estimate of ``x0`` (not clipped)."""
        a = self._abar_of(t, x_t)
        if self.prediction_type == "epsilon":
            return (x_t - (1 - a) ** 0.5 * model_output) / a**0.5
        if self.prediction_type == "sample":
            return model_output
        return a**0.5 * x_t - (1 - a) ** 0.5 * model_output

    def pred_epsilon(self, model_output: torch.Tensor, t: TimestepLike,
                     x_t: torch.Tensor) -> torch.Tensor:
        """The model's estimate of the noise ``eps`` in ``x_t``."""
        a = self._abar_of(t, x_t)
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "sample":
            return (x_t - a**0.5 * model_output) / (1 - a) ** 0.5
        return a**0.5 * model_output + (1 - a) ** 0.5 * x_t

    def epsilon_from_x0(self, x0: torch.Tensor, t: TimestepLike,
                        x_t: torch.Tensor) -> torch.Tensor:
        """The noise with ``add_noise(x0, eps, t) == x_t`` (re-derive eps after editing x0)."""
        a = self._abar_of(t, x_t)
        return (x_t - a**0.5 * x0) / (1 - a) ** 0.5

    # ------------------------------------------------------------ timesteps
    def timesteps(self, num_steps: int, start: int | None = None,
                  spacing: Spacing = "uniform") -> torch.Tensor:
        """Unique int timesteps descending from ``start`` to 0, at most ``num_steps`` of them.

        ``start`` defaults to ``T - 1``.  ``num_steps=1`` gives ``[start]`` (one jump to x0).
        The step after the last entry is the final step, ``prev_t=-1``.

        ``spacing="uniform"``: ``num_steps`` evenly spaced entries.  ``"quadratic"``: DiffPIR's
        ``skip_type="quad"``, ``floor(sqrt(linspace(0, (start + 1)^2, num_steps)))`` with the top
        entry set to ``start``: dense near ``start``, sparse near 0 (a warm start spends its
        evaluations where the noise is still large).  Entries that round to the same timestep are
        merged, so a quadratic sequence can be shorter than ``num_steps``.

        >>> Scheduler().timesteps(4, start=300).tolist()
        [300, 200, 100, 0]
        >>> Scheduler().timesteps(4, start=299, spacing="quadratic").tolist()
        [299, 244, 173, 0]
        """
        start = self.num_train_timesteps - 1 if start is None else start
        if isinstance(start, bool) or not isinstance(start, int):
            raise TypeError(f"start must be an int, got {type(start).__name__}")
        self._check_t(start, "start")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
        if not 1 <= num_steps <= start + 1:
            raise ValueError(
                f"num_steps must be in [1, start + 1 = {start + 1}], got {num_steps}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if num_steps == 1:
            return torch.tensor([start], dtype=torch.long)
        if spacing == "uniform":
            # spacing >= 1, so rounding keeps the entries unique
            return torch.linspace(start, 0, num_steps, dtype=torch.float64).round().long()
        grid = torch.linspace(0, float(start + 1) ** 2, num_steps, dtype=torch.float64)
        ts = grid.sqrt().floor().long().clamp(max=start)
        ts[-1] = start
        return torch.unique(ts).flip(0)

    # -------------------------------------------------------- reverse process
    def step_from_x0(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        prev_t: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        zeta: float | None = None,
    ) -> torch.Tensor:
        """DDIM update from an estimate of ``x0`` and of the noise ``eps`` at time ``t``.

        ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z`` with
        ``s = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``
        and ``abar_prev = 1`` when ``prev_t < 0``.  With ``zeta`` (DiffPIR's fresh-noise
        fraction, in [0, 1]) instead: ``s^2 = zeta (1 - abar_prev)``, i.e.
        ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) (sqrt(1 - zeta) eps + sqrt(zeta) z)``;
        ``eta`` must then be 0.  Use it to replace ``x0`` (data consistency)
        and re-noise; pass ``eps = epsilon_from_x0(x0, t, x_t)`` to keep the step consistent with
        the edited ``x0``, or the model's ``pred_epsilon`` to keep its noise direction.
        ``z`` is ``noise`` if given, else drawn from ``generator`` (only when ``s > 0``).
        """
        t, prev_t = self._scalar(t, "t"), self._scalar(prev_t, "prev_t")
        a_t = self._abar[self._check_t(t)]
        if prev_t >= t:
            raise ValueError(f"prev_t must be < t, got prev_t={prev_t}, t={t}")
        a_prev = self._abar[prev_t] if prev_t >= 0 else 1.0
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if zeta is not None:
            if not 0 <= zeta <= 1:
                raise ValueError(f"zeta must be in [0, 1], got {zeta}")
            if eta != 0:
                raise ValueError(f"give eta or zeta, not both (eta={eta}, zeta={zeta})")
            std = (zeta * (1 - a_prev)) ** 0.5
        else:
            std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        direction = max(1 - a_prev - std**2, 0.0) ** 0.5
        prev = a_prev**0.5 * x0 + direction * eps
        if std > 0:
            if noise is None:
                noise = randn(x0.shape, generator, x0.device, x0.dtype)
            prev = prev + std * noise
        return prev

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        prev_t: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """One reverse step ``x_t -> x_{prev_t}`` (DDIM; ``eta=1`` with ``prev_t = t-1`` is DDPM).

        ``prev_t=None`` means ``t - 1``; ``prev_t < 0`` is the final step to x0.  Equivalent to
        ``pred_x0`` (+ clipping) and ``pred_epsilon`` followed by :meth:`step_from_x0`.
        """
        t = self._scalar(t, "t")
        prev_t = t - 1 if prev_t is None else prev_t
        if model_output.shape != x_t.shape:
            raise ValueError(
                f"model_output shape {tuple(model_output.shape)} != x_t shape {tuple(x_t.shape)}")
        x0 = self.pred_x0(model_output, t, x_t)
        eps = self.pred_epsilon(model_output, t, x_t)
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        prev = self.step_from_x0(x0, eps, t, prev_t, eta=eta, generator=generator, noise=noise)
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    @staticmethod
    def _scalar(t: TimestepLike, name: str) -> int:
        if isinstance(t, torch.Tensor):
            if t.numel() != 1:
                raise ValueError(f"{name} must be a single timestep, got shape {tuple(t.shape)}")
            return int(t.item())
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(t).__name__}")
        return int(t)

    # ----------------------------------------------------------- noise levels
    def noise_level(self, t: TimestepLike) -> float | torch.Tensor:
        """``sqrt((1 - abar_t) / abar_t)``: the std of noise in ``x_t / sqrt(abar_t)``.

        On the model's [-1, 1] scale: an image-space noise std ``s`` on [0, 1] is ``2 * s`` here.
        Returns a float for an int ``t`` and a float64 tensor for a tensor ``t``.
        """
        if isinstance(t, torch.Tensor):
            t = t.long()
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
                raise ValueError(f"t must be in [0, {self.num_train_timesteps - 1}]")
            return self._sigmas[t]
        return float(self._sigmas[self._check_t(self._scalar(t, "t"))])

    def timestep_for_noise_level(self, sigma: float | torch.Tensor) -> int | torch.Tensor:
        """The int timestep whose :meth:`noise_level` is closest to ``sigma`` (absolute distance).

        ``sigma`` is on the model's [-1, 1] scale (image-space std ``s`` on [0, 1] -> ``2 * s``);
        values below ``noise_level(0)`` give 0, above ``noise_level(T-1)`` give ``T - 1``.
        A tensor ``sigma`` gives a long tensor of the same shape.
        """
        s = torch.as_tensor(sigma, dtype=torch.float64)
        if not torch.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
        table = self._sigmas  # increasing in t
        idx = torch.searchsorted(table, s.reshape(-1)).clamp(1, len(table) - 1)
        lower, upper = table[idx - 1], table[idx]
        idx = torch.where(s.reshape(-1) - lower <= upper - s.reshape(-1), idx - 1, idx)
        idx = idx.reshape(s.shape)
        return int(idx) if not isinstance(sigma, torch.Tensor) else idx
