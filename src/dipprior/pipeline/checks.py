"""Validation of what a caller hands the samplers and baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dipprior.operators import check_image
from dipprior.pipeline.adapt import check_rank

__all__ = ["CHAIN_BYTES_PER_PIXEL", "check_budget_adapts", "check_chains_fit", "check_observation",
           "check_operator"]

#: bytes per image pixel of one chain while the shipped prior runs on it (its activations,
#: measured on CPU; larger priors such as ADM need more): what ``samples`` chains are checked
#: against before a call allocates them
CHAIN_BYTES_PER_PIXEL = 4096


def check_operator(operator: Any) -> None:
    missing = [a for a in ("forward", "proximal", "pseudo_inverse", "noise_sigma",
                           "input_shape", "output_shape") if not hasattr(operator, a)]
    if missing:
        raise TypeError(f"operator: expected a dipprior operator (Denoise, Inpaint, "
                        f"SuperResolution, ...), got {type(operator).__name__} without {missing}")


def check_observation(observation: Any, operator: Any) -> tuple[int, ...]:
    """Validate one observation, (3, H, W) or (1, 3, H, W), against the operator; returns the
    restored image's shape (3, H', W')."""
    if not isinstance(observation, torch.Tensor):
        raise TypeError(f"observation: expected a torch.Tensor, got {type(observation).__name__}")
    if not observation.is_floating_point():
        raise TypeError(f"observation: expected a float tensor, got dtype {observation.dtype}")
    if observation.dim() == 4 and observation.shape[0] == 1:
        observation = observation[0]
    if observation.dim() != 3 or observation.shape[0] != 3:
        raise ValueError(f"observation: expected shape (3, H, W) or (N, 3, H, W), got "
                         f"{tuple(observation.shape)}")
    if observation.numel() == 0:
        raise ValueError(f"observation: empty image of shape {tuple(observation.shape)}; "
                         "expected (3, H, W) with H, W >= 1")
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


def check_initial_image(image: Any, shape: tuple[int, ...], name: str = "dip_image"
                        ) -> torch.Tensor:
    """A caller's initial image: a finite float tensor of the restored image's ``shape``, on
    the [0, 1] scale (as :func:`~dipprior.operators.check_image` checks images)."""
    if isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a float torch.Tensor {tuple(shape)} in [0, 1], got a "
                        f"numpy array of dtype {image.dtype}; convert it with "
                        "torch.from_numpy(array)")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a float torch.Tensor {tuple(shape)} in [0, 1], got "
                        f"{type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0, 1], got dtype {image.dtype}; "
                        "convert it first, e.g. x.float() / 255 for a uint8 image")
    if tuple(image.shape[-3:]) != tuple(shape) or image.numel() != torch.Size(shape).numel():
        raise ValueError(f"{name}: shape {tuple(image.shape)} does not match the image shape "
                         f"{tuple(shape)}")
    image = image.detach().reshape(shape)
    check_image(image, name)  # finite, and [0, 1]: a 0..255 image would run and score 16 dB
    return image.float()


def device_memory(device: torch.device) -> float:
    """The memory of ``device`` in bytes: a GPU's own, else the machine's RAM (inf where it
    cannot be read)."""
    import os

    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no check
        return float("inf")


def check_chains_fit(samples: int, images: int, pixels: int, device: torch.device,
                     ensemble: int = 1) -> None:
    """Refuse, before any work, ``samples`` chains for each of ``images`` images of ``pixels``
    pixels, each step evaluated ``ensemble`` times (one batch of model calls), that could not
    fit in ``device``'s memory even at :data:`CHAIN_BYTES_PER_PIXEL`."""
    per_sample = CHAIN_BYTES_PER_PIXEL * images * pixels * ensemble
    available = device_memory(device)
    if samples * per_sample > available:
        fit = max(int(available // per_sample), 0)
        name = "ensemble" if samples == 1 and ensemble > 1 else "samples"
        views = f", each evaluated in {ensemble} views (ensemble)," if ensemble > 1 else ""
        advice = [f"use samples <= {fit}"] if fit else [
            "restore it in tiles (dipprior.pipeline.tiles.restore_tiled)"]
        advice += ["a smaller ensemble"] if ensemble > 1 else []
        raise ValueError(f"{name}: {samples} chains for each of {images} image(s) of {pixels} "
                         f"pixels{views} need at least {samples * per_sample / 2**30:.1f} GiB "
                         f"({CHAIN_BYTES_PER_PIXEL} bytes per pixel per chain), more than the "
                         f"{available / 2**30:.1f} GiB of {device}; " + " or ".join(advice))


def check_budget_adapts(model: Any, config: Any, budget: object) -> None:
    """A ``budget`` point that adapts the prior (``config.adapt``) needs a prior that can be
    adapted: refuse, naming the budget, before any work."""
    if budget is None or config.adapt is None:
        return
    try:
        check_rank(model, config.adapt.rank)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"budget: {budget!r} adapts the prior for this task, but {exc}; use "
                         "budget='balanced', or a prior that is an nn.Module") from None


# the scheduler methods the sampler uses (any object that has them works)
SCHEDULER_API = ("num_train_timesteps", "alphas_cumprod", "timesteps", "add_noise", "pred_x0",
                 "pred_epsilon", "epsilon_from_x0", "step_from_x0", "noise_level",
                 "timestep_for_noise_level")


def check_arguments(model: Any, scheduler: Any, config: Any, overrides: dict[str, Any]) -> None:
    """The sampler's constructor arguments: a callable model, a scheduler with the methods the
    sampler uses, a :class:`~dipprior.pipeline.SamplerConfig` or None, and keyword settings
    that are its fields."""
    import dataclasses

    from dipprior.pipeline.config import RENAMED, SamplerConfig

    if not callable(model):
        raise TypeError(f"model: expected a callable model(x, t), got {type(model).__name__}")
    missing = [a for a in SCHEDULER_API if not hasattr(scheduler, a)]
    if missing:
        raise TypeError(f"scheduler: expected a dipprior Scheduler, got "
                        f"{type(scheduler).__name__} without {missing}")
    if config is not None and not isinstance(config, SamplerConfig):
        raise TypeError(f"config: expected a SamplerConfig, got {type(config).__name__}")
    if "guidance_scale" in overrides:
        raise TypeError(RENAMED)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SamplerConfig)}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; sampler settings "
                        f"are the fields of SamplerConfig")
