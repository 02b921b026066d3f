"""Which kind of task a call is, the DIP stage it gets when none is given, and that stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from dipprior.operators import Operator
from dipprior.operators.base import DIP_BUDGET

__all__ = ["DIP_BUDGET", "default_dip_config", "fit_dip", "is_denoising", "resolve_init"]

def is_denoising(operators: Sequence[Operator]) -> bool:
    """Whether every operator is Gaussian denoising (``A = I`` with a noise level > 0);
    a mixture of denoising and other tasks in one call is refused."""
    kinds = {op.is_denoising for op in operators}
    if len(kinds) > 1:
        raise ValueError("operator: init='auto' and the presets need one kind of task per "
                         "call (all Gaussian denoising or none)")
    return kinds.pop()


def resolve_init(operators: Sequence[Operator]) -> str:
    """``init="auto"``: ``"observation"`` for Gaussian denoising, where the prior's chain from
    the observation measured best and a DIP stage only costs time, and ``"classical"`` (the
    classical restoration as start) for every other task, where it matched or beat the DIP
    start at a small fraction of the time (``docs/results.md``)."""
    return "observation" if is_denoising(operators) else "classical"


def default_dip_config(operator: Operator) -> Any:
    """The DIP stage when none is given: the operator's :meth:`~dipprior.operators.Operator.
    dip_stage` (on noise-free tasks and deblurring a fixed budget of :data:`DIP_BUDGET`
    iterations, the chain completes the image; on other noisy ones up to 2000 iterations
    stopped by the prior, ``early_stopping="reference"``, before the network fits the noise)."""
    from dipprior.dip import DIPConfig

    return DIPConfig(**operator.dip_stage())


def fit_dip(observation: torch.Tensor, operator: Operator, config: Any, *, seed: int,
            device: torch.device | None = None, progress: bool = True,
            ground_truth: torch.Tensor | None = None,
            reference: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Run :func:`dipprior.dip.fit` on one image with this call's seed, device and progress.

    These are passed only where ``config`` (a :class:`~dipprior.dip.DIPConfig`, None: the
    operator's default stage) has such fields, so a config that fixes them elsewhere is respected.
    ``ground_truth`` only feeds the fit's PSNR history; ``reference`` is passed on for
    ``early_stopping="reference"``.  Returns ``(image, DIPResult)`` with the
    image in the operator's input shape (the high-resolution shape for super-resolution).
    """
    from dipprior import dip

    config = config if config is not None else default_dip_config(operator)
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
    if reference is not None:
        overrides["reference"] = reference
    result = dip.fit(observation, operator, config=config, **overrides)
    image_shape = tuple(operator.input_shape(observation.shape[-3:]))
    return result.image.detach().reshape(image_shape).float(), result
