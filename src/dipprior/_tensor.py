"""Small tensor and model helpers shared by every module: device, dtype, scale, noise, eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

Model = Callable[[torch.Tensor, torch.Tensor], Any]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (checked: a CUDA device needs CUDA), else CUDA when available, else
    CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not (hasattr(torch.backends, "mps")
                                     and torch.backends.mps.is_available()):
        raise ValueError(f"device: {str(device)!r} asked for, but MPS (Apple GPU) is not "
                         "available here")
    return device


def model_device(model: Model, device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the model's parameter device, else :func:`default_device`."""
    if device is not None:
        return default_device(device)
    if isinstance(model, nn.Module):
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return default_device()


def model_dtype(model: Model) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if it has none)."""
    if isinstance(model, nn.Module):
        for param in model.parameters():
            if param.is_floating_point():
                return param.dtype
    return torch.float32


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode for the block and restore its mode afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def to_model_scale(x: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] -> the diffusion model's [-1, 1] scale."""
    return 2.0 * x - 1.0


def to_image_scale(x: torch.Tensor) -> torch.Tensor:
    """The model's [-1, 1] scale -> an image in [0, 1] (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def randn(shape: Sequence[int], generator: torch.Generator | Sequence[torch.Generator] | None,
          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
          ) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, then moved.

    A sequence of generators draws one row of the batch from each, so that image ``i`` of a
    batch gets exactly the noise a single-image call with generator ``i`` would get.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"generator: {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([randn((1, *shape[1:]), g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
