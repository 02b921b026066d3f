"""Other priors as dipprior models: diffusers DDPM folders and Gaussian denoisers.

* :func:`load_diffusers` reads a diffusers ``UNet2DModel`` folder (a pipeline folder with
  ``unet/`` and ``scheduler/``, or a bare model folder) offline, weights from safetensors only,
  and returns ``(model, scheduler)`` ready for :class:`~dipprior.pipeline.DIPInitializedSampler`:
  the UNet wrapped in :class:`DiffusersUNet` (``forward(x, t)`` returns a tensor) and the
  diffusers scheduler config mapped to a :class:`~dipprior.diffusion.Scheduler` by
  :func:`scheduler_from_diffusers`, which refuses every setting it cannot honour.
  :func:`dipprior.diffusion.load_pretrained` calls it for a diffusers folder.
* :class:`DenoiserPrior` turns a Gaussian denoiser ``D(x, sigma)`` on [0, 1] images (deepinv's
  convention) into a diffusion model ``model(x_t, t)`` with the scheduler's prediction type.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dipprior._tensor import default_device
from dipprior.diffusion.checkpoint import load_state_into, read_json, read_tensors
from dipprior.diffusion.precision import Precision, set_precision
from dipprior.diffusion.scheduler import Scheduler
from dipprior.diffusion.unet import pad_to_multiple

__all__ = ["DenoiserPrior", "DiffusersUNet", "load_diffusers", "scheduler_from_diffusers",
           "is_diffusers_folder"]

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_PICKLE = "diffusion_pytorch_model.bin"
DIFFUSERS_SCHEDULER = "scheduler_config.json"
PIP_HINT = "pip install dipprior[diffusers]"

# ------------------------------------------------------------ scheduler config mapping
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler")
# honoured: passed on to dipprior's Scheduler (same names, same meaning)
HONOURED_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "prediction_type", "clip_sample", "clip_sample_range")
# dipprior's DDIM/DDPM step uses the posterior variance beta~_t = (1 - abar_{t-1}) /
# (1 - abar_t) * beta_t (Scheduler.step_from_x0 with eta=1, prev_t=t-1), which is diffusers'
# "fixed_small"; "fixed_small_log" is the same variance computed in log space.
VARIANCE_TYPES = (None, "fixed_small", "fixed_small_log")
# accepted and ignored, with the reason (none of them changes the trained model's schedule)
IGNORED_KEYS = {
    # inference-time spacing of diffusers' set_timesteps; dipprior chooses its own timesteps
    # (Scheduler.timesteps / the sampler's t0 and steps), the training schedule is unchanged
    "timestep_spacing": "inference timestep spacing",
    "steps_offset": "inference timestep offset",
    # DDIM's final step: dipprior always steps to abar = 1 (set_alpha_to_one=True)
    "set_alpha_to_one": "DDIM final step (dipprior always lands on x0)",
    # only read when thresholding=True, which is refused
    "dynamic_thresholding_ratio": "used only with thresholding",
    "sample_max_value": "used only with thresholding",
    # diffusers 0.1-0.3 configs (e.g. google/ddpm-*): tensor backend, unused
    "tensor_format": "legacy tensor backend",
}
# refused unless they hold the value shown (their default: no effect)
REFUSED_UNLESS_DEFAULT = {"trained_betas": (None, []), "thresholding": (None, False),
                          "rescale_betas_zero_snr": (None, False), "timestep_values": (None,)}


def scheduler_from_diffusers(config: dict[str, Any]) -> Scheduler:
    """Map a diffusers ``DDPMScheduler`` / ``DDIMScheduler`` config to a :class:`Scheduler`.

    ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` (``linear``,
    ``scaled_linear``, ``squaredcos_cap_v2`` -> ``cosine``), ``prediction_type``,
    ``clip_sample`` and ``clip_sample_range`` are honoured (missing ones take diffusers'
    defaults, which are dipprior's).  A setting dipprior cannot honour raises ``ValueError``
    naming the key: ``variance_type`` other than ``fixed_small`` / ``fixed_small_log`` (the
    fixed-small posterior variance dipprior's step uses), ``trained_betas``,
    ``thresholding=True``, ``rescale_betas_zero_snr=True``, a scheduler class other than
    DDPM/DDIM, and any key this mapping does not know.  ``timestep_spacing``, ``steps_offset``
    and ``set_alpha_to_one`` only concern diffusers' inference timesteps and are ignored, as are
    the thresholding parameters (thresholding itself is refused) and keys starting with ``_``.
    """
    if not isinstance(config, dict):
        raise TypeError(f"scheduler config must be a dict, got {type(config).__name__}")
    cls = config.get("_class_name")
    if cls is not None and cls not in SCHEDULER_CLASSES:
        raise ValueError(f"scheduler config: _class_name={cls!r} is not supported; dipprior maps "
                         f"{' and '.join(SCHEDULER_CLASSES)} configs (a DDPM noise schedule)")
    if config.get("variance_type") not in VARIANCE_TYPES:
        raise ValueError(
            f"scheduler config: variance_type={config['variance_type']!r} is not supported; "
            "dipprior's DDPM/DDIM step uses the fixed-small posterior variance "
            "(variance_type 'fixed_small' or 'fixed_small_log')")
    for key, allowed in REFUSED_UNLESS_DEFAULT.items():
        if key in config and config[key] not in allowed:
            value = config[key]
            shown = f"a list of {len(value)} betas" if isinstance(value, list) else repr(value)
            raise ValueError(f"scheduler config: {key}={shown} is not supported by dipprior's "
                             "Scheduler (it would change the schedule or the x0 estimate)")
    known = {*HONOURED_KEYS, "variance_type", *IGNORED_KEYS, *REFUSED_UNLESS_DEFAULT}
    unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"scheduler config: unknown key(s) {unknown}; dipprior cannot tell "
                         "whether they change the noise schedule, so it refuses them")
    kwargs = {k: config[k] for k in HONOURED_KEYS if k in config and config[k] is not None}
    try:
        return Scheduler(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scheduler config: {exc}") from None


# ------------------------------------------------------------------ the UNet wrapper
class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` as a dipprior model: ``forward(x, t)`` returns a tensor.

    ``t`` is a number, a 0-d tensor or an (N,) tensor.  Inputs whose size is not a multiple of
    the UNet's down-sampling factor are padded (reflect, or replicate for tiny images) and the
    output cropped back, as dipprior's :class:`~dipprior.diffusion.UNet` does.  The wrapped
    model is ``.unet``; its parameters are the wrapper's, so ``.to(dtype)`` / the sampler's
    device and dtype handling work unchanged.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        config = dict(getattr(unet, "config", {}) or {})
        self.unet = unet
        self.in_channels = int(config.get("in_channels", 3))
        self.sample_size = config.get("sample_size")
        self.multiple = 2 ** max(len(config.get("down_block_types", ())) - 1, 0)
        # a dtype runs the UNet under torch.autocast (diffusion.precision); None: float32
        self.autocast: torch.dtype | None = None

    def forward(self, x: torch.Tensor, t: int | float | torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        n, (h, w) = x.shape[0], x.shape[-2:]
        if not isinstance(t, torch.Tensor):
            t = torch.full((n,), t, device=x.device,
                           dtype=torch.long if isinstance(t, int) else torch.float32)
        elif t.numel() == 1:
            t = t.reshape(1).expand(n)
        elif t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}")
        low = (torch.autocast(x.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with low:
            out = self.unet(pad_to_multiple(x, self.multiple), t.to(x.device),
                            return_dict=False)[0]
        return out[..., :h, :w].to(x.dtype)


# -------------------------------------------------------------------- folder loading
def _diffusers_layout(folder: Path) -> tuple[Path, Path | None] | None:
    """``(unet folder, scheduler config or None)`` of a diffusers folder, or ``None``."""
    index = folder / "model_index.json"
    if index.is_file() or (folder / "unet" / "config.json").is_file():
        sched = folder / "scheduler" / DIFFUSERS_SCHEDULER
        return folder / "unet", sched if sched.is_file() else None
    config_file = folder / "config.json"
    if config_file.is_file():
        config = read_json(config_file)
        if "_class_name" in config and "format" not in config:
            for sched in (folder / DIFFUSERS_SCHEDULER,                      # flat repo layout
                          folder / "scheduler" / DIFFUSERS_SCHEDULER,
                          folder.parent / "scheduler" / DIFFUSERS_SCHEDULER):  # <pipeline>/unet
                if sched.is_file():
                    return folder, sched
            return folder, None
    return None


def is_diffusers_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like a diffusers pipeline or model folder."""
    folder = Path(folder)
    return folder.is_dir() and _diffusers_layout(folder) is not None


def _check_model_index(index: dict[str, Any], source: Path) -> None:
    components = {k: v for k, v in index.items() if not k.startswith("_")
                  and not (isinstance(v, list) and all(x is None for x in v))}
    extra = sorted(set(components) - {"unet", "scheduler"})
    if extra:
        raise ValueError(f"{source}: a pipeline with components {extra} besides unet and "
                         "scheduler (a latent or conditional pipeline); dipprior reads "
                         "unconditional pixel-space DDPM pipelines (unet + scheduler) only")
    unet = components.get("unet")
    if isinstance(unet, list) and len(unet) == 2 and unet[1] != "UNet2DModel":
        raise ValueError(f"{source}: unet is a {unet[1]}; dipprior reads UNet2DModel only")


def _check_unet_config(config: dict[str, Any], source: Path) -> None:
    cls = config.get("_class_name")
    if cls != "UNet2DModel":
        raise ValueError(f"{source}: _class_name={cls!r}; dipprior reads diffusers UNet2DModel "
                         "folders only")
    if config.get("time_embedding_type", "positional") not in ("positional", "learned"):
        raise ValueError(f"{source}: time_embedding_type={config['time_embedding_type']!r} is "
                         "not supported (a score-SDE model conditioned on sigma, not on a DDPM "
                         "timestep)")
    for key in ("class_embed_type", "num_class_embeds"):
        if config.get(key) is not None:
            raise ValueError(f"{source}: {key}={config[key]!r}: a class-conditional UNet needs "
                             "class labels; dipprior runs unconditional models only")
    c_in, c_out = config.get("in_channels", 3), config.get("out_channels", 3)
    if c_in != c_out:
        raise ValueError(f"{source}: in_channels={c_in} but out_channels={c_out} (a learned-"
                         "variance or conditional model); dipprior needs out_channels == "
                         "in_channels")


def _weights_file(unet_dir: Path) -> Path:
    weights = unet_dir / DIFFUSERS_WEIGHTS
    if weights.is_file():
        return weights
    if (unet_dir / DIFFUSERS_PICKLE).is_file():
        raise ValueError(
            f"{unet_dir} holds only {DIFFUSERS_PICKLE}, a pickle, which dipprior never loads; "
            f"it reads {DIFFUSERS_WEIGHTS}.  If you trust the file, convert it once with "
            "diffusers: UNet2DModel.from_pretrained(folder, use_safetensors=False)"
            ".save_pretrained(folder)")
    if (unet_dir / f"{DIFFUSERS_WEIGHTS}.index.json").is_file():
        raise ValueError(f"{unet_dir}: sharded weights are not supported; save the UNet as one "
                         f"{DIFFUSERS_WEIGHTS}")
    present = sorted(p.name for p in unet_dir.iterdir()) if unet_dir.is_dir() else []
    raise ValueError(f"{unet_dir}: no {DIFFUSERS_WEIGHTS} (found {present or 'nothing'})")


def load_diffusers(folder: str | os.PathLike, device: str | torch.device | None = None, *,
                   dtype: Precision | torch.dtype = "float32"
                   ) -> tuple[DiffusersUNet, Scheduler]:
    """Read a diffusers DDPM folder offline -> ``(DiffusersUNet, Scheduler)``.

    ``folder`` is a pipeline folder (``model_index.json``, ``unet/config.json`` +
    ``unet/diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``) or a bare
    ``UNet2DModel`` folder (``config.json`` + weights) whose scheduler config is
    ``scheduler_config.json`` beside it, in ``scheduler/`` below it or in ``../scheduler/``.
    Weights are read with safetensors only (a ``.bin`` alone is refused); nothing is
    downloaded.  The model runs in ``dtype`` (float32 by default, see
    :mod:`~dipprior.diffusion.precision`), in eval mode, on ``device`` (``None``: CUDA if available,
    else CPU).  Needs ``diffusers`` (``ImportError`` with the pip hint otherwise).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    layout = _diffusers_layout(folder)
    if layout is None:
        raise ValueError(f"{folder} is not a diffusers folder (no model_index.json, "
                         "unet/config.json or config.json with a _class_name)")
    unet_dir, sched_file = layout
    if (folder / "model_index.json").is_file():
        _check_model_index(read_json(folder / "model_index.json"), folder / "model_index.json")
    if sched_file is None:
        raise ValueError(
            f"{folder}: no scheduler config; looked for {DIFFUSERS_SCHEDULER} in "
            f"{unet_dir}, {unet_dir / 'scheduler'} and {unet_dir.parent / 'scheduler'}.  Write "
            "the one the model was trained with, e.g. DDPMScheduler(...).save_config(folder)")
    try:
        scheduler = scheduler_from_diffusers(read_json(sched_file))
    except ValueError as exc:
        raise ValueError(f"{sched_file}: {exc}") from None
    config_file = unet_dir / "config.json"
    config = read_json(config_file)
    _check_unet_config(config, config_file)
    weights = _weights_file(unet_dir)
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ImportError(f"loading the diffusers folder {folder} needs diffusers: "
                          f"{PIP_HINT} ({exc})") from None
    try:
        unet = UNet2DModel.from_config(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_file} is not a valid UNet2DModel config: {exc}") from None
    tensors, _ = read_tensors(weights)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"weights in {weights} contain NaN or inf "
                         f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")
    # checkpoints written before diffusers 0.14 name attention weights query/key/value/proj_attn
    fix_keys = getattr(unet, "_fix_state_dict_keys_on_load", None)
    if fix_keys is not None:
        tensors = fix_keys(dict(tensors)) or tensors
    load_state_into(unet, tensors, str(weights))
    dev = default_device(device)
    return set_precision(DiffusersUNet(unet), dtype, dev).to(dev).eval(), scheduler


# ------------------------------------------------------------ Gaussian denoiser as prior
class DenoiserPrior(nn.Module):
    """A Gaussian denoiser as a diffusion model: ``model(x_t, t)`` -> what the scheduler wants.

    ``denoiser(x, sigma)`` removes white Gaussian noise of std ``sigma`` from images on the
    [0, 1] scale (deepinv's ``Denoiser`` convention); it is called with ``sigma`` an (N,) tensor.
    At timestep ``t``, with ``abar_t`` the scheduler's ``alphas_cumprod`` and
    ``sigma_t = scheduler.noise_level(t) = sqrt((1 - abar_t) / abar_t)``,
    ``x_t / sqrt(abar_t) = x0 + sigma_t eps`` on the model's [-1, 1] scale, i.e. the image
    ``(x_t / sqrt(abar_t) + 1) / 2`` carries noise of std ``sigma_t / 2`` on [0, 1], so

        ``x0 = 2 D((x_t / sqrt(abar_t) + 1) / 2, sigma_t / 2) - 1``

    and the output is ``x0`` (``prediction_type="sample"``), the noise
    ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)`` (``"epsilon"``) or
    ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (``"v_prediction"``), so that
    ``scheduler.pred_x0(model(x_t, t), t, x_t)`` is the denoiser's ``x0``.

    ``sigma_range=(lo, hi)`` is the denoiser's valid noise range on the [0, 1] scale: a
    timestep whose ``sigma_t / 2`` falls outside raises ``ValueError`` naming ``t`` and the
    range (default ``None``: no limit).  A DIP- or observation-initialised chain starting at a
    moderate ``t0`` only visits noise levels up to that of ``t0``.

    If ``denoiser`` is an ``nn.Module`` it is a sub-module (its parameters give the sampler the
    device and dtype); the arithmetic runs in at least float32, the denoiser gets its input in
    the dtype the model is called with, and the output is float32 (or float64 for float64
    input).
    """

    def __init__(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 scheduler: Scheduler, *,
                 sigma_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser: expected a callable denoiser(x, sigma), got "
                            f"{type(denoiser).__name__}")
        missing = [a for a in ("alphas_cumprod", "noise_level", "prediction_type",
                               "num_train_timesteps") if not hasattr(scheduler, a)]
        if missing:
            raise TypeError(f"scheduler: expected a dipprior Scheduler, got "
                            f"{type(scheduler).__name__} without {missing}")
        if scheduler.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"scheduler: unknown prediction_type {scheduler.prediction_type!r}")
        if sigma_range is not None:
            try:
                lo, hi = (float(s) for s in sigma_range)
            except (TypeError, ValueError):
                raise ValueError(f"sigma_range: expected (lo, hi), got {sigma_range!r}") from None
            if not (0 <= lo <= hi and not math.isnan(hi)):
                raise ValueError(f"sigma_range: need 0 <= lo <= hi, got {sigma_range!r}")
            sigma_range = (lo, hi)
        self.denoiser = denoiser  # registered as a sub-module when it is one
        self.scheduler = scheduler
        self.sigma_range = sigma_range

    def extra_repr(self) -> str:
        return f"prediction_type={self.scheduler.prediction_type!r}, sigma_range={self.sigma_range}"

    def valid_timesteps(self) -> tuple[int, int] | None:
        """``(first, last)`` timesteps whose ``sigma_t / 2`` lies in ``sigma_range`` (``None``:
        none do); all timesteps when there is no range."""
        T = self.scheduler.num_train_timesteps
        if self.sigma_range is None:
            return 0, T - 1
        s = self.scheduler.noise_level(torch.arange(T)) / 2
        ok = ((s >= self.sigma_range[0]) & (s <= self.sigma_range[1])).nonzero().flatten()
        return (int(ok[0]), int(ok[-1])) if len(ok) else None

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
        n = x.shape[0]
        if isinstance(t, torch.Tensor):
            if t.is_floating_point() and not bool((t == t.round()).all()):
                raise ValueError("t: DenoiserPrior needs integer timesteps")
            t = t.detach().to("cpu", torch.long).reshape(-1)
            if t.numel() == 1:
                t = t.expand(n)
            elif t.numel() != n:
                raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}")
        elif isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"t must be an int or a tensor, got {type(t).__name__}")
        else:
            t = torch.full((n,), t, dtype=torch.long)
        sigma = self.scheduler.noise_level(t) / 2  # float64, image scale; checks t's range
        if self.sigma_range is not None:
            lo, hi = self.sigma_range
            bad = ((sigma < lo) | (sigma > hi)).nonzero().flatten()
            if len(bad):
                i = int(bad[0])
                raise ValueError(
                    f"timestep t={int(t[i])} has noise std sigma_t/2={float(sigma[i]):.4g} on "
                    f"the [0, 1] scale, outside the denoiser's sigma_range [{lo:g}, {hi:g}]")
        abar = self.scheduler.alphas_cumprod[t]
        work = torch.promote_types(x.dtype, torch.float32)
        shape = (n,) + (1,) * (x.dim() - 1)
        sa = abar.sqrt().to(x.device, work).view(shape)
        s1a = (1 - abar).sqrt().to(x.device, work).view(shape)
        xw = x.to(work)
        y = (xw / sa + 1) / 2
        d = self.denoiser(y.to(x.dtype), sigma.to(x.device, x.dtype))
        if not isinstance(d, torch.Tensor) or d.shape != x.shape:
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"denoiser: returned {got} for input {tuple(x.shape)}")
        x0 = 2 * d.to(work) - 1
        kind = self.scheduler.prediction_type
        if kind == "sample":
            return x0
        eps = (xw - sa * x0) / s1a
        if kind == "epsilon":
            return eps
        return sa * eps - s1a * x0

