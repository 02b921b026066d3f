"""DIP-initialised reverse diffusion with data consistency, and the baselines it is compared with.

:class:`DIPInitializedSampler` fits a Deep Image Prior to the observation, forward-diffuses its
output to an intermediate timestep ``t0`` and runs only the last reverse steps of a diffusion
prior, pulling every step's ``x0`` estimate towards the observation (DiffPIR-style half-quadratic
splitting). ``init="noise"`` is the DDPM-only baseline (from pure noise at ``T - 1``),
``init="observation"`` starts from the pseudo-inverse of the observation; :class:`DIPBaseline`
(DIP alone) and :class:`CBM3DBaseline` (the ``bm3d`` package, optional) complete the comparison.

Scales: images and observations are in [0, 1]; the diffusion model works in [-1, 1].  The only
conversions are :func:`to_model` / :func:`image_to_model` / :func:`from_model` below.

Example:
    >>> import torch
    >>> from dipprior.diffusion import Scheduler, UNet
    >>> from dipprior.dip import DIPConfig
    >>> from dipprior.operators import Denoise
    >>> op = Denoise(25 / 255)
    >>> y = op.degrade(torch.rand(3, 16, 16), torch.Generator().manual_seed(0))
    >>> sampler = DIPInitializedSampler(UNet(base_channels=8), Scheduler(), steps=3,
    ...                                 dip=DIPConfig(iterations=5), t0=40, progress=False)
    >>> result = sampler(y, op, seed=0)
    >>> result.image.shape, result.nfe, result.t0
    (torch.Size([3, 16, 16]), 3, 40)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dipprior.diffusion.sampling import model_device
from dipprior.diffusion.scheduler import Scheduler, _randn_like
from dipprior.dip.stopping import haar_diagonal
from dipprior.operators import Denoise, Operator

__all__ = [
    "CBM3DBaseline",
    "DIPBaseline",
    "DIPInitializedSampler",
    "SampleResult",
    "auto_t0",
    "estimate_error_std",
    "fit_dip",
    "from_model",
    "image_to_model",
    "resolve_t0",
    "to_model",
]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
INITS = ("dip", "noise", "observation")
GUIDANCES = ("proximal", None)
RENOISE = ("auto", "full", "missing")
_SCHEDULER_API = ("num_train_timesteps", "timesteps", "add_noise", "pred_x0", "step",
                  "step_from_x0", "epsilon_from_x0", "noise_level", "timestep_for_noise_level")


@dataclass
class SampleResult:
    """What a sampler (or baseline) returns for one observation.

    Attributes:
        image: the restored image in [0, 1], same rank as the observation's image.
        dip_image: the DIP reconstruction the chain started from (None when DIP was not used).
        t0: the timestep the reverse chain started at (None for methods without diffusion).
        nfe: diffusion-model evaluations actually made (DIP iterations are not counted here).
        seconds: wall-clock seconds per stage: ``dip``, ``diffusion`` and ``total``.
        error_std: the estimated error std of the initial image on the [0, 1] scale (set when
            ``t0="auto"`` chose ``t0`` or ``renoise="missing"`` used it; see
            :func:`estimate_error_std`).
        timesteps: the timesteps at which the model was evaluated.
        intermediates: with ``return_intermediates=True``, one dict per step with ``t``,
            ``x0_hat`` (the model's estimate) and ``x0`` (after data consistency), both in [0, 1]
            and on the CPU; else None.
        dip_iterations: iterations the DIP fit ran (None when DIP was not used).
    """

    image: torch.Tensor
    dip_image: torch.Tensor | None = None
    t0: int | None = None
    nfe: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    error_std: float | None = None
    timesteps: list[int] = field(default_factory=list)
    intermediates: list[dict[str, Any]] | None = None
    dip_iterations: int | None = None


# ----------------------------------------------------------------------------- scale conversion


def image_to_model(x: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] -> the model's [-1, 1] scale."""
    return 2.0 * x - 1.0


def to_model(y: torch.Tensor, operator: Operator) -> torch.Tensor:
    """An observation ``y = A x + n`` of a [0, 1] image -> the observation of ``2 x - 1``.

    ``A (2x - 1) + 2n = 2 y - A 1`` for a linear ``A``: for inpainting ``A 1`` is the mask, so the
    unobserved entries stay 0.  Its noise std is ``2 * operator.noise_sigma``.
    """
    return 2.0 * y - operator.forward(torch.ones(operator.input_shape(y.shape), dtype=y.dtype,
                                                 device=y.device))


def from_model(x: torch.Tensor) -> torch.Tensor:
    """The model's [-1, 1] scale -> an image in [0, 1] (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- validation


def _check_operator(operator: Any) -> None:
    missing = [a for a in ("forward", "proximal", "pseudo_inverse", "noise_sigma",
                           "input_shape", "output_shape") if not hasattr(operator, a)]
    if missing:
        raise TypeError(f"operator: expected a dipprior operator (Denoise, Inpaint, "
                        f"SuperResolution, ...), got {type(operator).__name__} without {missing}")


def _check_observation(observation: Any, operator: Operator) -> tuple[int, ...]:
    """Validate the observation against the operator; returns the image shape (C, H, W)."""
    if not isinstance(observation, torch.Tensor):
        raise TypeError(f"observation: expected a torch.Tensor, got {type(observation).__name__}")
    if not observation.is_floating_point():
        raise TypeError(f"observation: expected a float tensor, got dtype {observation.dtype}")
    if observation.dim() == 4:
        if observation.shape[0] != 1:
            raise ValueError(f"observation: one image at a time, got a batch of shape "
                             f"{tuple(observation.shape)}; loop over the images")
        observation = observation[0]
    if observation.dim() != 3 or observation.shape[0] != 3:
        raise ValueError(f"observation: expected shape (3, H, W) or (1, 3, H, W), got "
                         f"{tuple(observation.shape)}")
    if not bool(torch.isfinite(observation).all()):
        raise ValueError("observation: contains NaN or inf values")
    lo, hi = float(observation.min()), float(observation.max())
    if lo < -1.0 or hi > 2.0:
        raise ValueError(f"observation: values span [{lo:.3g}, {hi:.3g}]; expected an image in "
                         f"[0, 1] (plus noise), not 0..255 or [-1, 1]")
    try:
        image_shape = tuple(operator.input_shape(observation.shape))
        expected = tuple(operator.forward(torch.zeros(image_shape)).shape)
    except ValueError as exc:
        raise ValueError(f"observation: shape {tuple(observation.shape)} does not fit "
                         f"{operator!r}: {exc}") from None
    if expected != tuple(observation.shape):
        raise ValueError(f"observation: shape {tuple(observation.shape)} does not match "
                         f"{operator!r}, which maps {image_shape} to {expected}")
    return image_shape


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def resolve_t0(t0: int | float, num_train_timesteps: int) -> int:
    """An int timestep or a float strength in (0, 1] -> the int start timestep.

    A strength ``s`` maps to ``round(s * (T - 1))`` (Python's round, halves to even), so
    ``1.0`` is ``T - 1`` (pure noise, as SDEdit's strength 1).

    >>> resolve_t0(0.5, 1000), resolve_t0(1.0, 1000), resolve_t0(37, 1000)
    (500, 999, 37)
    """
    last = num_train_timesteps - 1
    if _is_int(t0):
        if not 0 <= int(t0) <= last:
            raise ValueError(f"t0: timestep must be in [0, {last}], got {t0}")
        return int(t0)
    if isinstance(t0, numbers.Real) and not isinstance(t0, bool):
        if not (math.isfinite(float(t0)) and 0.0 < float(t0) <= 1.0):
            raise ValueError(f"t0: a float is a strength in (0, 1], got {t0}")
        return round(float(t0) * last)
    raise TypeError(f"t0: expected an int timestep, a float strength in (0, 1] or 'auto', "
                    f"got {t0!r}")


# ----------------------------------------------------------------------------- auto t0


def estimate_error_std(image: torch.Tensor, observation: torch.Tensor,
                       operator: Operator) -> float:
    """Estimate the RMS error of ``image`` (an estimate of the clean image) without the clean image.

    ``sqrt(max(r^2 - sigma_y^2, s_hf^2))`` on the [0, 1] scale, where

    * ``r^2`` is the mean squared residual ``A image - y`` over the observed entries (those where
      ``A 1 != 0``) and ``sigma_y = operator.noise_sigma``: for an error ``e`` independent of the
      observation noise, ``E r^2 = ||A e||^2 / m + sigma_y^2``, so the excess over the known noise
      estimates the error the observation can see;
    * ``s_hf`` is Donoho's MAD noise estimate, ``median(|HH|) / 0.6745`` over the finest diagonal
      Haar sub-band of ``image`` (orthonormal, so white error of std ``s`` gives ``s``; natural
      images have sparse HH coefficients, so the median ignores edges and texture).  It sees the
      white part of the error, which the residual misses where the estimate has fitted part of
      the noise (the excess then shrinks, down to 0 for an exact fit of ``y``), and errors at
      scattered unobserved pixels (randomly missing pixels), where the residual is blind.

    The larger of the two is taken, not the sum: a white error independent of the noise shows
    up fully in both.  Smooth errors in unobserved regions (large holes, lost high frequencies
    under super-resolution) are invisible to both terms, so the estimate can be low there.
    """
    x = image.detach().float().reshape(-1, *image.shape[-3:])[0].cpu()
    y = observation.detach().float().reshape(-1, *observation.shape[-3:])[0].cpu()
    observed = operator.forward(torch.ones_like(x)) != 0
    residual = (operator.forward(x) - y)[observed]
    excess = float(residual.square().mean()) - operator.noise_sigma ** 2 if residual.numel() else 0
    s_hf = float(haar_diagonal(x).abs().median()) / 0.6745
    return math.sqrt(max(excess, s_hf ** 2, 0.0))


def auto_t0(scheduler: Scheduler, error_std: float) -> int:
    """The timestep whose noise level matches an error std on the [0, 1] scale.

    The forward process at ``t`` adds noise of std ``noise_level(t)`` to ``x0`` (on the model's
    [-1, 1] scale, twice the [0, 1] scale), so an initial image with error std ``e`` looks like
    ``x0`` plus noise at the timestep whose noise level is ``2 e``.
    """
    return int(scheduler.timestep_for_noise_level(2.0 * float(error_std)))


# ----------------------------------------------------------------------------- DIP


def fit_dip(observation: torch.Tensor, operator: Operator, config: Any, *, seed: int,
            device: torch.device | None = None, progress: bool = True,
            ground_truth: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Run :func:`dipprior.dip.fit` with this call's seed, device and progress setting.

    These are passed only where ``config`` (a :class:`~dipprior.dip.DIPConfig`) has such fields,
    so a config that fixes them elsewhere is respected.  ``ground_truth`` only feeds the fit's
    PSNR history.  Returns ``(image, DIPResult)``.
    """
    from dipprior import dip

    names = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) \
        else set()
    overrides: dict[str, Any] = {}
    if "seed" in names:
        overrides["seed"] = seed
    if "progress" in names:
        overrides["progress"] = progress and getattr(config, "progress", True)
    if "device" in names and device is not None and getattr(config, "device", None) is None:
        overrides["device"] = device
    if ground_truth is not None:
        overrides["ground_truth"] = ground_truth
    result = dip.fit(observation, operator, config=config, **overrides)
    # DIP's output is the restored image: the operator's input shape, not the observation's
    # (they differ for super-resolution).
    image_shape = tuple(operator.input_shape(observation.shape[-3:]))
    return result.image.detach().reshape(image_shape).float(), result


def _default_dip_config() -> Any:
    from dipprior.dip import DIPConfig

    return DIPConfig()


# ----------------------------------------------------------------------------- the sampler


class DIPInitializedSampler:
    """Restore an image with a diffusion prior whose reverse chain starts from a DIP fit.

    Args:
        model: any callable ``model(x, t) -> Tensor`` on the [-1, 1] scale with ``t`` an (N,)
            long tensor: a :class:`~dipprior.diffusion.UNet`, or a diffusers ``UNet2DModel``
            wrapped as ``lambda x, t: unet(x, t).sample``.  Its output type (epsilon, x0, v) is
            the scheduler's ``prediction_type``.
        scheduler: a :class:`~dipprior.diffusion.Scheduler`.
        dip: the :class:`~dipprior.dip.DIPConfig` of the DIP fit (``init="dip"``).
        steps: reverse steps, i.e. model evaluations; ``1 <= steps <= t0 + 1``.  With
            ``t0="auto"`` the chain takes ``min(steps, t0 + 1)`` steps.
        eta: DDIM stochasticity (0 deterministic, 1 DDPM-like ancestral noise).
        t0: start timestep: an int in ``[0, T - 1]``, a float strength in (0, 1]
            (``round(strength * (T - 1))``) or ``"auto"``: from :func:`estimate_error_std` of the
            initial image via :func:`auto_t0` (never from a clean image).  ``init="noise"``
            always starts at ``T - 1``; ``init="observation"`` with ``"auto"`` on a
            :class:`~dipprior.operators.Denoise` starts where the noise level matches sigma.
        init: ``"dip"`` (the method), ``"noise"`` (DDPM-only baseline) or ``"observation"``
            (the pseudo-inverse of the observation).
        guidance: ``"proximal"`` (each step ``x0 <- operator.proximal(x0_hat, y, rho_t)``,
            then re-noise) or ``None`` (plain SDEdit from the initial image).
        guidance_scale: ``lambda`` of DiffPIR: ``rho_t = lambda / sigma_t^2`` with ``sigma_t`` the
            noise level of step ``t``, i.e. the data term weighs ``lambda sigma_y^2 / sigma_t^2``
            relative to the prior: inverse-variance weighting of the observation (error
            ``sigma_y``) and the model's estimate with its error taken as
            ``sigma_t / sqrt(lambda)``.  The default 10 (error about a third of the noise level,
            as the shipped prior's one-step denoiser measures at sigma = 25) was chosen on
            CBSD432 training crops, where it beat 1 by up to 3.6 dB (docs/pipeline.md).  Irrelevant
            for noise-free observations, where the data term is a hard constraint.
        renoise: how ``x_t0`` is made from the initial image: ``"full"`` adds the forward
            process's whole noise of ``t0`` (SDEdit); ``"missing"`` counts the image's own error,
            estimated by :func:`estimate_error_std` without the clean image, as noise already
            present and adds only the missing variance (none at the auto ``t0``), as is always
            done for ``init="observation"`` on a :class:`~dipprior.operators.Denoise`, whose
            noise std is known; ``"auto"`` (default): ``"missing"`` for noisy observations
            (``operator.noise_sigma > 0``; measured better on training crops), else ``"full"``.
            Ignored by ``init="noise"``.
        device: where the diffusion runs (None: the model's device, else CUDA if available).
        progress: show tqdm bars.
    """

    def __init__(
        self,
        model: Model,
        scheduler: Scheduler,
        *,
        dip: Any = None,
        steps: int = 50,
        eta: float = 0.0,
        t0: int | float | str = "auto",
        init: str = "dip",
        guidance: str | None = "proximal",
        guidance_scale: float = 10.0,
        renoise: str = "auto",
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model: expected a callable model(x, t), got {type(model).__name__}")
        missing = [a for a in _SCHEDULER_API if not hasattr(scheduler, a)]
        if missing:
            raise TypeError(f"scheduler: expected a dipprior Scheduler, got "
                            f"{type(scheduler).__name__} without {missing}")
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if guidance not in GUIDANCES:
            raise ValueError(f"guidance: expected 'proximal' or None, got {guidance!r}")
        if renoise not in RENOISE:
            raise ValueError(f"renoise: expected one of {RENOISE}, got {renoise!r}")
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        if not (isinstance(eta, numbers.Real) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta: expected a number >= 0, got {eta!r}")
        if not (isinstance(guidance_scale, numbers.Real) and math.isfinite(guidance_scale)
                and guidance_scale > 0):
            raise ValueError(f"guidance_scale: expected a number > 0, got {guidance_scale!r}")
        T = scheduler.num_train_timesteps
        if isinstance(t0, str):
            if t0 != "auto":
                raise ValueError(f"t0: expected an int, a float strength or 'auto', got {t0!r}")
            fixed = None
        else:
            fixed = resolve_t0(t0, T)
        if init == "noise":
            if fixed is not None and fixed != T - 1:
                raise ValueError(f"t0: init='noise' starts from pure noise at T - 1 = {T - 1}; "
                                 f"got t0={t0!r} (use init='dip' or 'observation' to start "
                                 f"lower)")
            fixed = T - 1
        if fixed is not None and steps > fixed + 1:
            raise ValueError(f"steps: at most t0 + 1 = {fixed + 1} reverse steps fit between "
                             f"t0={fixed} and 0, got steps={steps}")
        self.model = model
        self.scheduler = scheduler
        self.dip = dip  # None: DIPConfig() at fit time
        self.steps = int(steps)
        self.eta = float(eta)
        self.t0 = t0
        self._fixed_t0 = fixed
        self.init = init
        self.guidance = guidance
        self.guidance_scale = float(guidance_scale)
        self.renoise = renoise
        self.device = device
        self.progress = progress

    def __repr__(self) -> str:
        return (f"DIPInitializedSampler(init={self.init!r}, t0={self.t0!r}, steps={self.steps}, "
                f"eta={self.eta:g}, guidance={self.guidance!r}, "
                f"guidance_scale={self.guidance_scale:g}, renoise={self.renoise!r})")

    # -------------------------------------------------------------------- call
    def __call__(
        self,
        observation: torch.Tensor,
        operator: Operator,
        seed: int = 0,
        ground_truth: torch.Tensor | None = None,
        return_intermediates: bool = False,
        *,
        dip_image: torch.Tensor | None = None,
    ) -> SampleResult:
        """Restore ``observation`` (``operator`` applied to a [0, 1] image, plus noise).

        ``seed`` fixes the DIP fit and every diffusion noise draw.  ``ground_truth`` is passed
        to the DIP fit for its PSNR history only (it never steers fitting, stopping or ``t0``).
        ``dip_image`` reuses an earlier DIP reconstruction of the same observation (ablations
        over ``t0``/``steps`` fit once); its seconds then count as 0.
        """
        _check_operator(operator)
        image_shape = _check_observation(observation, operator)
        batched = observation.dim() == 4
        if not _is_int(seed):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        dev = model_device(self.model, self.device)
        y = observation.reshape(observation.shape[-3:]).float()
        t_start = time.perf_counter()

        dip_result = None
        dip_seconds = 0.0
        if self.init == "dip":
            if dip_image is None:
                cfg = self.dip if self.dip is not None else _default_dip_config()
                dip_image, dip_result = fit_dip(y, operator, cfg, seed=seed, device=dev,
                                                progress=self.progress,
                                                ground_truth=ground_truth)
                dip_seconds = time.perf_counter() - t_start
            else:
                if tuple(dip_image.shape[-3:]) != image_shape:
                    raise ValueError(f"dip_image: shape {tuple(dip_image.shape)} does not match "
                                     f"the image shape {image_shape}")
                dip_image = dip_image.detach().reshape(image_shape).float()
            init_image = dip_image
        elif self.init == "observation":
            init_image = operator.pseudo_inverse(y)
        else:
            init_image = None

        t_diff = time.perf_counter()
        out = self._diffuse(y, operator, init_image, seed, dev, return_intermediates)
        diffusion_seconds = time.perf_counter() - t_diff
        image = out.image.to(observation.device)
        out.image = image.unsqueeze(0) if batched else image
        out.dip_image = dip_image
        if dip_result is not None:
            out.dip_iterations = int(getattr(dip_result, "iterations", 0)) or None
        out.seconds = {"dip": dip_seconds, "diffusion": diffusion_seconds,
                       "total": time.perf_counter() - t_start}
        return out

    # ---------------------------------------------------------------- diffusion
    def _start(self, y: torch.Tensor, y_m: torch.Tensor, operator: Operator,
               init_image: torch.Tensor | None, generator: torch.Generator, dev: torch.device
               ) -> tuple[torch.Tensor, int, float | None]:
        """The initial ``x_t0`` on the model scale, ``t0`` and the auto error estimate."""
        s = self.scheduler
        shape = (1, *operator.input_shape(y.shape))  # the image's shape, not the observation's
        noise = _randn_like(torch.empty(shape, device=dev), generator)
        if init_image is None:  # pure noise at T - 1
            return noise, s.num_train_timesteps - 1, None
        x_m = image_to_model(init_image.to(dev)).unsqueeze(0)
        # the observation of a Denoise task already carries white noise of known std; with
        # renoise="missing" the initial image's estimated error counts as noise already present
        noisy_init = self.init == "observation" and isinstance(operator, Denoise)
        error_std = None
        renoise = self.renoise
        if renoise == "auto":
            renoise = "missing" if operator.noise_sigma > 0 else "full"
        if noisy_init:
            init_sigma = 2.0 * operator.noise_sigma
        else:
            if self._fixed_t0 is None or renoise == "missing":
                error_std = estimate_error_std(init_image, y, operator)
            init_sigma = 2.0 * error_std if renoise == "missing" else 0.0
        if self._fixed_t0 is not None:
            t0 = self._fixed_t0
        elif noisy_init:
            t0 = int(s.timestep_for_noise_level(init_sigma))
        else:
            t0 = auto_t0(s, error_std)
        if init_sigma == 0.0:
            return s.add_noise(x_m, noise, t0), t0, error_std
        # x_t = sqrt(abar) (x0 + sigma_t eps): the start already holds noise of std init_sigma,
        # so only the missing variance sigma_t^2 - init_sigma^2 is added (none at the matched t0).
        abar = float(s.alphas_cumprod[t0])
        extra = math.sqrt(max(float(s.noise_level(t0)) ** 2 - init_sigma ** 2, 0.0))
        return abar ** 0.5 * (x_m + extra * noise), t0, error_std

    @torch.inference_mode()
    def _diffuse(self, y: torch.Tensor, operator: Operator, init_image: torch.Tensor | None,
                 seed: int, dev: torch.device, keep: bool) -> SampleResult:
        from tqdm.auto import tqdm

        s = self.scheduler
        generator = torch.Generator().manual_seed(int(seed))
        y = y.to(dev)
        y_m = to_model(y, operator).unsqueeze(0)
        x, t0, error_std = self._start(y, y_m, operator, init_image, generator, dev)
        steps = min(self.steps, t0 + 1)
        timesteps = s.timesteps(steps, start=t0).tolist()
        prevs = timesteps[1:] + [-1]
        sigma_y = 2.0 * operator.noise_sigma
        clip = getattr(s, "clip_sample", False)
        clip_range = getattr(s, "clip_sample_range", 1.0)
        model = self.model
        was_training = isinstance(model, nn.Module) and model.training
        if isinstance(model, nn.Module):
            model.eval()
        intermediates: list[dict[str, Any]] | None = [] if keep else None
        nfe = 0
        x0 = x
        try:
            for t, prev in tqdm(list(zip(timesteps, prevs, strict=True)),
                                disable=not self.progress, desc="diffusion"):
                out = model(x, torch.full((x.shape[0],), t, device=dev, dtype=torch.long))
                nfe += 1
                if out.shape != x.shape:
                    raise ValueError(f"model: returned shape {tuple(out.shape)} for input "
                                     f"{tuple(x.shape)}")
                x0_hat = s.pred_x0(out, t, x)
                if clip:
                    x0_hat = x0_hat.clamp(-clip_range, clip_range)
                if self.guidance == "proximal":
                    rho = self.guidance_scale / float(s.noise_level(t)) ** 2
                    x0 = operator.proximal(x0_hat, y_m, rho, sigma=sigma_y)
                    # DiffPIR: re-noise along the noise direction implied by the corrected x0
                    eps = s.epsilon_from_x0(x0, t, x)
                else:
                    x0 = x0_hat
                    eps = s.pred_epsilon(out, t, x)
                x = s.step_from_x0(x0, eps, t, prev, eta=self.eta, generator=generator)
                if intermediates is not None:
                    intermediates.append({"t": t, "x0_hat": from_model(x0_hat[0]).cpu(),
                                          "x0": from_model(x0[0]).cpu()})
        finally:
            if was_training:
                model.train()
        # the last step goes to prev_t = -1, where x is exactly the (data-consistent) x0
        return SampleResult(image=from_model(x0[0]), t0=t0, nfe=nfe, error_std=error_std,
                            timesteps=timesteps, intermediates=intermediates)


# ----------------------------------------------------------------------------- baselines


class DIPBaseline:
    """Deep Image Prior alone: the DIP fit's output is the restoration (NFE 0).

    ``DIPBaseline(config)(observation, operator, seed=0)`` -> :class:`SampleResult`.
    """

    def __init__(self, dip: Any = None, *, device: str | torch.device | None = None,
                 progress: bool = True) -> None:
        self.dip = dip  # None: DIPConfig() at fit time
        self.device = device
        self.progress = progress

    def __repr__(self) -> str:
        return f"DIPBaseline({self.dip!r})"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None, *,
                 dip_image: torch.Tensor | None = None) -> SampleResult:
        _check_operator(operator)
        image_shape = _check_observation(observation, operator)
        start = time.perf_counter()
        y = observation.reshape(observation.shape[-3:]).float()
        iterations = None
        if dip_image is None:
            dev = torch.device(self.device) if self.device is not None else None
            cfg = self.dip if self.dip is not None else _default_dip_config()
            dip_image, result = fit_dip(y, operator, cfg, seed=seed, device=dev,
                                        progress=self.progress)
            iterations = int(getattr(result, "iterations", 0)) or None
        image = dip_image.reshape(image_shape).clamp(0, 1)
        seconds = time.perf_counter() - start
        if observation.dim() == 4:
            image = image.unsqueeze(0)
        return SampleResult(image=image, dip_image=dip_image, nfe=0, dip_iterations=iterations,
                            seconds={"dip": seconds, "diffusion": 0.0, "total": seconds})


class CBM3DBaseline:
    """Colour BM3D (Dabov et al. 2007) through the optional ``bm3d`` package; denoising only.

    The reference a user would pick instead of a learned method.  ``bm3d`` must be installed
    (``pip install dipprior[bm3d]``); an operator other than :class:`Denoise` raises
    ``ValueError``.
    """

    def __init__(self) -> None:
        try:
            import bm3d  # noqa: F401
        except ImportError as exc:
            raise ImportError("CBM3DBaseline needs the optional 'bm3d' package: "
                              "pip install bm3d") from exc

    def __repr__(self) -> str:
        return "CBM3DBaseline()"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None) -> SampleResult:
        import bm3d

        _check_operator(operator)
        if not isinstance(operator, Denoise):
            raise ValueError(f"operator: CBM3D only denoises, got {operator!r}")
        _check_observation(observation, operator)
        start = time.perf_counter()
        y = observation.reshape(observation.shape[-3:]).detach().cpu().double()
        out = bm3d.bm3d_rgb(y.permute(1, 2, 0).numpy(), operator.noise_sigma)
        image = torch.from_numpy(out).permute(2, 0, 1).float().clamp(0, 1)
        seconds = time.perf_counter() - start
        image = image.to(observation.device).reshape(observation.shape)
        return SampleResult(image=image, nfe=0,
                            seconds={"dip": 0.0, "diffusion": 0.0, "total": seconds})
