"""The data step of the reverse chain: DiffPIR's proximal step, optionally with the DIP image as a
second observation of the whole image.

With the DIP image ``d`` read as ``d = x + e``, ``e ~ N(0, s_d^2 I)``, the data step becomes
``argmin_x ||y - A x||^2 / (2 s^2) + ||x - d||^2 / (2 s_d^2) + rho / 2 ||x - x0_hat||^2``.
The last two terms are one quadratic, ``(rho + 1 / s_d^2) / 2 ||x - c||^2`` with
``c = (rho x0_hat + d / s_d^2) / (rho + 1 / s_d^2)``, so the step is the operator's own proximal
map at ``c`` with weight ``rho + 1 / s_d^2``: any operator's closed form (or conjugate gradient)
serves unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dipprior.operators import Operator

__all__ = ["merge_gaussian", "observation_to_model_scale", "proximal_step"]


def merge_gaussian(x0_hat: torch.Tensor, rho: float, d: torch.Tensor, d_std: float
                   ) -> tuple[torch.Tensor, float]:
    """``rho / 2 ||x - x0_hat||^2 + ||x - d||^2 / (2 d_std^2)`` as ``w / 2 ||x - c||^2 + const``.

    Returns ``(c, w)``.  ``d_std`` must be > 0 (a DIP image is never exact).

    >>> c, w = merge_gaussian(torch.tensor([0.0]), 1.0, torch.tensor([1.0]), 1.0)
    >>> c.item(), w
    (0.5, 2.0)
    """
    if not d_std > 0:
        raise ValueError(f"d_std: expected a number > 0, got {d_std}")
    if not rho >= 0:
        raise ValueError(f"rho: expected a number >= 0, got {rho}")
    precision = 1.0 / float(d_std) ** 2
    weight = float(rho) + precision
    return (float(rho) * x0_hat + precision * d) / weight, weight


def observation_to_model_scale(y: torch.Tensor, operator: Operator) -> torch.Tensor:
    """An observation ``y = A x + n`` of a [0, 1] image -> the observation of ``2 x - 1``.

    ``A (2x - 1) + 2n = 2 y - A 1`` for a linear ``A``: for inpainting ``A 1`` is the mask, so the
    unobserved entries stay 0.  Its noise std is ``2 * operator.noise_sigma``.
    """
    ones = torch.ones(operator.input_shape(y.shape), dtype=y.dtype, device=y.device)
    return 2.0 * y - operator.forward(ones)


def proximal_step(lam: float, scheduler: Any, operators: Sequence[Operator],
                  observations: Sequence[torch.Tensor],
                  second: tuple[Sequence[torch.Tensor], Sequence[float]] | None = None
                  ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """DiffPIR's data step for a batch of chains on the model scale: ``x0_hat`` (one row per
    chain) -> ``argmin ||y - A x||^2 / (2 (2 sigma_n)^2) + rho / 2 ||x - x0_hat||^2`` with
    ``rho = lam / (4 sigma_t^2)`` (the noise std is 2 sigma_n on that scale); ``second``: DIP
    images and their error stds, merged into the centre as a second observation."""
    def proximal(x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        rho = lam / (4.0 * float(scheduler.noise_level(t)) ** 2)
        out = []
        for j, (op, y) in enumerate(zip(operators, observations, strict=True)):
            center, weight = x0_hat[j:j + 1], rho
            if second is not None:
                center, weight = merge_gaussian(center, rho, second[0][j], second[1][j])
            out.append(op.proximal(center, y, weight, sigma=2.0 * op.noise_sigma))
        return torch.cat(out)

    return proximal
