"""What a sampler or baseline returns: :class:`SampleResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SampleResult", "stack_results"]


@dataclass
class SampleResult:
    """What a sampler (or baseline) returns.

    For one image (an observation of shape (3, H, W)) every field is a single value; for a batch
    (N, 3, H, W), N >= 1, ``image`` and ``dip_image`` are (N, 3, H, W) and the per-image fields
    (``t0``, ``nfe``, ``error_std``, ``timesteps``, ``dip_iterations``, ``adapt_iterations``,
    ``adapt_gain``, ``intermediates``) are lists.

    Attributes:
        image: the restored image in [0, 1], same rank as the observation.
        dip_image: the DIP reconstruction the chain started from or used as a second
            observation (None when DIP was not used).
        t0: the timestep the reverse chain started at (None for methods without diffusion).
        nfe: diffusion-model evaluations of the chains (DIP iterations and the passes of a
            test-time adaptation are not counted here: see ``adapt_iterations``).
        seconds: wall-clock seconds per stage: ``dip`` (the DIP fit), ``start`` (a classical or
            callable start), ``diffusion`` (the test-time adaptation included), ``adapt`` (the
            adaptation alone, 0 without) and ``total``.
        error_std: the estimated error std of the initial image on the [0, 1] scale (set when
            ``t0="auto"`` chose ``t0`` or ``renoise="missing"`` used it).
        timesteps: the timesteps at which the model was evaluated.
        intermediates: with ``return_intermediates=True``, one dict per step with ``t``,
            ``x0_hat`` (the model's estimate) and ``x0`` (after data consistency), both in [0, 1]
            and on the CPU; else None.
        dip_iterations: iterations the DIP fit ran (None when DIP was not used).
        adapt_iterations: optimiser steps the test-time adaptation of the prior ran (each one
            model evaluation per chain or recorruption, and its backward pass; None when the
            prior was not adapted).
        adapt_gain: the adaptation's gain over the prior (the MSE it removes, in percent of
            the noise variance) as estimated at its probe from the observation alone
            (:attr:`~dipprior.pipeline.adapt.AdaptConfig.probe`; None without a probe).
    """

    image: torch.Tensor
    dip_image: torch.Tensor | None = None
    t0: Any = None
    nfe: Any = 0
    seconds: dict[str, float] = field(default_factory=dict)
    error_std: Any = None
    timesteps: Any = field(default_factory=list)
    intermediates: list[dict[str, Any]] | None = None
    dip_iterations: Any = None
    adapt_iterations: Any = None
    adapt_gain: Any = None

    def to(self, device: Any) -> SampleResult:
        """The result with its images on ``device``."""
        self.image = self.image.to(device)
        if self.dip_image is not None:
            self.dip_image = self.dip_image.to(device)
        return self


#: the per-image fields of a :class:`SampleResult` (lists for a batch)
PER_IMAGE = ("t0", "nfe", "error_std", "timesteps", "dip_iterations", "adapt_iterations",
             "adapt_gain", "intermediates")


def stack_results(results: list[SampleResult], batched: bool) -> SampleResult:
    """Single-image results -> one result as a batched call returns it (seconds added up)."""
    if not batched:
        return results[0]
    dips = [r.dip_image for r in results]
    out = SampleResult(
        image=torch.stack([r.image.cpu() for r in results]),
        dip_image=torch.stack([d.cpu() for d in dips]) if all(d is not None for d in dips)
        else None,
        seconds={k: sum(r.seconds.get(k, 0.0) for r in results) for k in results[0].seconds})
    for key in PER_IMAGE:
        values = [getattr(r, key) for r in results]
        setattr(out, key, None if all(v is None for v in values) else values)
    return out
