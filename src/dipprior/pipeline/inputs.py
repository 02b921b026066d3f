"""What a sampler call is handed, checked and split per image: observations, operators, seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dipprior._seeds import DIFFUSION_NOISE, EXTRA_SAMPLES, stream_seed
from dipprior.operators import Operator, check_image
from dipprior.pipeline.checks import check_observation, check_operator
from dipprior.pipeline.config import is_int

__all__ = ["groups", "noise_seed", "per_image", "sample_seed", "seeds_for", "split"]


def split(observation: Any, operator: Any) -> tuple[list[torch.Tensor], list[Operator], bool]:
    """Checked per-image observations (3, H, W) and operators, and whether the input was a
    batch (N, 3, H, W)."""
    if isinstance(operator, Sequence):
        ops = list(operator)
    else:
        ops = None
    if not isinstance(observation, torch.Tensor):
        raise TypeError(f"observation: expected a torch.Tensor, got {type(observation).__name__}")
    n = observation.shape[0] if observation.dim() == 4 else 1
    if n < 1:
        raise ValueError(f"observation: empty batch of shape {tuple(observation.shape)}")
    if ops is None:
        ops = [operator] * n
    if len(ops) != n:
        raise ValueError(f"operator: {len(ops)} operators for {n} observations")
    for op in ops:
        check_operator(op)
    ys = [observation[i] for i in range(n)] if observation.dim() == 4 else [observation]
    for y, op in zip(ys, ops, strict=True):
        check_observation(y, op)
    return [y.float() for y in ys], ops, observation.dim() == 4


def noise_seed(seed: int) -> int:
    """The seed of the diffusion noise for ``seed``: a stream of its own.

    Seeded with ``seed`` itself, the first draw (the start noise) would repeat, value for value,
    the noise of an observation degraded with ``torch.Generator().manual_seed(seed)`` (as
    :func:`~dipprior.experiments.degrade` does), so the chain would add noise correlated with
    the observation's instead of independent noise.
    """
    return stream_seed(seed, DIFFUSION_NOISE)


def sample_seed(seed: int, sample: int) -> int:
    """The diffusion-noise seed of chain ``sample`` of an image seeded ``seed``: chain 0 is
    :func:`noise_seed` (so one sample is what it always was), chain ``j > 0`` a stream of its
    own."""
    return noise_seed(seed) if sample == 0 else stream_seed(seed, EXTRA_SAMPLES + 2 * sample)


def seeds_for(seed: int, generator: torch.Generator | None, n: int) -> list[int]:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got "
                            f"{type(generator).__name__}")
        draws = torch.randint(0, 2**31 - 1, (n,), generator=generator, device=generator.device)
        return [int(v) for v in draws.tolist()]
    if not is_int(seed):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return [int(seed) + i for i in range(n)]


def per_image(value: torch.Tensor | None, n: int, name: str) -> list[torch.Tensor | None]:
    if value is None:
        return [None] * n
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    check_image(value, name)  # [0, 1] images: 0..255 ones would run and come out white
    if value.dim() == 4:
        if value.shape[0] != n:
            raise ValueError(f"{name}: expected {n} images, got shape {tuple(value.shape)}")
        return [value[i] for i in range(n)]
    if n != 1:
        raise ValueError(f"{name}: expected a batch of {n} images, got shape "
                         f"{tuple(value.shape)}")
    return [value]


def groups(timesteps: list[list[int]]) -> list[list[int]]:
    """Indices of the chains (or images) that share a timestep sequence, in first-seen
    order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, ts in enumerate(timesteps):
        groups.setdefault(tuple(ts), []).append(i)
    return list(groups.values())
