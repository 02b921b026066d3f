"""Which kind of task a call is, and the DIP stage it gets when none is given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dipprior.operators import Denoise, Operator

__all__ = ["DIP_BUDGET", "default_dip_config", "is_denoising", "resolve_init"]

#: DIP iterations before the chain takes over on noise-free tasks (the sampler's default)
DIP_BUDGET = 1000


def is_denoising(operators: Sequence[Operator]) -> bool:
    """Whether every operator is Gaussian denoising (:class:`Denoise` with a noise level > 0);
    a mixture of denoising and other tasks in one call is refused."""
    kinds = {isinstance(op, Denoise) and op.noise_sigma > 0 for op in operators}
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
    """The DIP stage when none is given: on noise-free tasks and deblurring a fixed budget of
    :data:`DIP_BUDGET` iterations (the chain completes the image); on other noisy ones up to 2000
    iterations stopped by the prior (``early_stopping="reference"``) before the network fits
    the noise."""
    from dipprior.dip import DIPConfig
    from dipprior.operators import Blur

    # deblurring's noise (0.01 on [0, 1] in the benchmarks) is too weak for the prior's
    # reference to stop DIP by: the fixed budget, as for noise-free tasks
    if operator.noise_sigma > 0 and not isinstance(operator, Blur):
        return DIPConfig(iterations=2000, early_stopping="reference")
    return DIPConfig(iterations=DIP_BUDGET)
