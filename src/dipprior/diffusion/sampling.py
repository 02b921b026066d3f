"""Unconditional sampling with any ``model(x, t) -> tensor`` and a :class:`Scheduler`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from dipprior.diffusion.scheduler import Scheduler, _randn_like

__all__ = ["sample", "model_device"]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_device(model: Model, device: str | torch.device | None) -> torch.device:
    """``device`` if given, else the model's parameter device, else CUDA if available, else CPU."""
    if device is not None:
        return torch.device(device)
    if isinstance(model, nn.Module):
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def sample(
    model: Model,
    scheduler: Scheduler,
    shape: Sequence[int],
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Generate images from pure noise with ``steps`` DDIM steps (``eta=1``: DDPM ancestral).

    ``model`` is any callable ``model(x, t)`` with ``t`` an (N,) long tensor, e.g. a
    :class:`UNet` or ``lambda x, t: unet(x, t).sample`` for a diffusers ``UNet2DModel``.
    The initial noise and any step noise come from ``generator``.  Returns images in [0, 1]
    (the model's [-1, 1] output mapped back and clamped), shape ``shape``.

    >>> from dipprior.diffusion import Scheduler, UNet
    >>> x = sample(UNet(base_channels=16), Scheduler(), (1, 3, 16, 16), steps=5,
    ...            generator=torch.Generator().manual_seed(0), progress=False)
    >>> x.shape
    torch.Size([1, 3, 16, 16])
    """
    from tqdm.auto import tqdm

    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be (N, C, H, W), got {shape}")
    dev = model_device(model, device)
    timesteps = scheduler.timesteps(steps).tolist()
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        x = _randn_like(torch.empty(shape, device=dev), generator)
        t_batch = [torch.full((shape[0],), t, device=dev, dtype=torch.long) for t in timesteps]
        prevs = timesteps[1:] + [-1]
        for i in tqdm(range(len(timesteps)), disable=not progress, desc="sample"):
            out = model(x, t_batch[i])
            x = scheduler.step(out, timesteps[i], x, prev_t=prevs[i], eta=eta,
                               generator=generator).prev_sample
    finally:
        if was_training:
            model.train()
    return ((x + 1) / 2).clamp_(0, 1)
