"""The one reverse-diffusion loop, and unconditional sampling built on it.

:func:`reverse_diffusion` is a k-diffusion-style sampler: a model wrapped as an ``x0`` denoiser,
an optional data-consistency hook that corrects each ``x0`` estimate, a DDIM/DDPM step, and a
callback for intermediates.  :func:`sample` (from pure noise) and
:class:`~dipprior.pipeline.DIPInitializedSampler` (from a DIP, observation or noise start) both
run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dipprior._tensor import Model, eval_mode, model_device, model_dtype, randn, to_image_scale
from dipprior.diffusion.scheduler import Scheduler

__all__ = ["sample", "reverse_diffusion", "model_output", "Consistency"]

# x0_hat (N, C, H, W) on the model scale, timestep t -> the corrected x0
Consistency = Callable[[torch.Tensor, int], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None


def as_tensor(out: Any) -> Any:
    """A model's output as its tensor: a diffusers output object's ``.sample``, a tuple's first
    item; anything else as it is."""
    if isinstance(out, torch.Tensor):
        return out
    return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out


def model_output(model: Model, x: torch.Tensor, t: int) -> torch.Tensor:
    """``model(x, t)`` as a float32 tensor of ``x``'s shape, checked.

    The model runs in its own dtype (bf16/fp16 models work); a diffusers ``UNet2DModel`` output
    object is unwrapped (``.sample``); NaN/inf raise ``FloatingPointError`` naming ``t``.
    """
    dtype = model_dtype(model)
    out = as_tensor(model(x.to(dtype),
                          torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model: returned {type(out).__name__}, expected a tensor")
    if out.shape != x.shape:
        raise ValueError(f"model: returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    out = out.float()
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(f"model: output at timestep {t} contains NaN or inf")
    return out


@torch.inference_mode()
def reverse_diffusion(
    model: Model,
    scheduler: Scheduler,
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    consistency: Consistency | None = None,
    eta: float = 0.0,
    zeta: float | None = None,
    generator: Generators = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    adapt: Callable[[torch.Tensor, int, int], None] | None = None,
) -> torch.Tensor:
    """Run the reverse chain from ``x`` (at ``timesteps[0]``) down to ``x0``; returns ``x0``.

    Each step: the model's ``x0`` estimate (clipped when the scheduler says so), corrected by
    ``consistency(x0_hat, t)`` if given (the step's noise direction is then the one implied by
    the corrected ``x0``, as in DiffPIR), then a DDIM step with ``eta`` to the next timestep
    (``eta=1``: DDPM ancestral), or DiffPIR's step with the fresh-noise fraction ``zeta``.
    The last step lands on ``x0`` itself.  ``callback`` gets
    ``{"i", "t", "x", "x0_hat", "x0"}`` after every step.  Everything is on the model's
    [-1, 1] scale, in float32.  ``adapt(x, t, i)``, if given, runs before step ``i``'s model
    evaluation (test-time adaptation of ``model``, :class:`~dipprior.pipeline.adapt.Adaptation`).
    """
    from tqdm.auto import tqdm

    timesteps = [int(t) for t in timesteps]
    if not timesteps:
        raise ValueError("timesteps: empty")
    clip = bool(getattr(scheduler, "clip_sample", False))
    clip_range = float(getattr(scheduler, "clip_sample_range", 1.0))
    x0 = x = x.float()
    with eval_mode(model):
        prevs = timesteps[1:] + [-1]
        for i, (t, prev) in enumerate(tqdm(list(zip(timesteps, prevs, strict=True)),
                                           disable=not progress, desc="diffusion")):
            if adapt is not None:
                adapt(x, t, i)
            out = model_output(model, x, t)
            x0_hat = scheduler.pred_x0(out, t, x)
            if clip:
                x0_hat = x0_hat.clamp(-clip_range, clip_range)
            if consistency is None:
                x0, eps = x0_hat, scheduler.pred_epsilon(out, t, x)
            else:
                x0 = consistency(x0_hat, t)
                eps = scheduler.epsilon_from_x0(x0, t, x)
            noise = None
            if (eta > 0 or (zeta or 0) > 0) and prev >= 0:
                noise = randn(x.shape, generator, x.device)
            x = scheduler.step_from_x0(x0, eps, t, prev, eta=eta, noise=noise, zeta=zeta)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat, "x0": x0})
    return x0


def sample(
    model: Model,
    scheduler: Scheduler,
    shape: Sequence[int],
    steps: int = 50,
    eta: float = 0.0,
    generator: Generators = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Generate images from pure noise with ``steps`` DDIM steps (``eta=1``: DDPM ancestral).

    ``model`` is any callable ``model(x, t)`` with ``t`` an (N,) long tensor, e.g. a
    :class:`UNet` or a diffusers ``UNet2DModel``.  The initial noise and any step noise come
    from ``generator``.  Returns images in [0, 1] (the model's [-1, 1] output mapped back and
    clamped), shape ``shape``.

    >>> from dipprior.diffusion import Scheduler, UNet
    >>> x = sample(UNet(base_channels=16), Scheduler(), (1, 3, 16, 16), steps=5,
    ...            generator=torch.Generator().manual_seed(0), progress=False)
    >>> x.shape
    torch.Size([1, 3, 16, 16])
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape: expected (N, C, H, W) with every size >= 1, got {shape}")
    dev = model_device(model, device)
    x = randn(shape, generator, dev)
    x0 = reverse_diffusion(model, scheduler, x, scheduler.timesteps(steps).tolist(), eta=eta,
                           generator=generator, progress=progress)
    return to_image_scale(x0)
