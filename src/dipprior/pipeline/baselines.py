"""The methods DIP->DDPM is compared with besides its own ``init`` variants: DIP alone, and the
classical peers a user would pick instead (biharmonic, bicubic, CBM3D)."""

from __future__ import annotations

import time
from typing import Any

import torch

from dipprior._tensor import default_device
from dipprior.denoisers import cbm3d
from dipprior.operators import Operator
from dipprior.pipeline.checks import check_initial_image, check_observation, check_operator
from dipprior.pipeline.plan import dip_stage
from dipprior.pipeline.result import SampleResult
from dipprior.pipeline.tasks import fit_dip

__all__ = ["CBM3DBaseline", "ClassicalBaseline", "DIPBaseline"]


class DIPBaseline:
    """Deep Image Prior alone: the DIP fit's output is the restoration (NFE 0).

    ``dip``: a :class:`~dipprior.dip.DIPConfig`, or None / a mapping of its fields: the
    operator's default DIP stage (the one the sampler fits), except that a stage stopped by the
    prior's reference restoration stops by ES-WMV here (DIP alone has no prior).

    ``DIPBaseline(config)(observation, operator, seed=0)`` -> :class:`SampleResult`.
    """

    def __init__(self, dip: Any = None, *, device: str | torch.device | None = None,
                 progress: bool = True) -> None:
        self.dip = dip  # None or a mapping: the operator's default stage (plan.dip_stage)
        self.device = device
        self.progress = progress

    def __repr__(self) -> str:
        return f"DIPBaseline({self.dip!r})"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None, *,
                 dip_image: torch.Tensor | None = None) -> SampleResult:
        check_operator(operator)
        image_shape = check_observation(observation, operator)
        start = time.perf_counter()
        y = observation.reshape(observation.shape[-3:]).float()
        iterations = None
        if dip_image is None:
            dev = default_device(self.device) if self.device is not None else None
            dip_image, result = fit_dip(y, operator, alone(self.dip, operator), seed=seed,
                                        device=dev,
                                        progress=self.progress, ground_truth=ground_truth)
            iterations = int(getattr(result, "iterations", 0)) or None
        else:
            dip_image = check_initial_image(dip_image, image_shape)
        image = dip_image.clamp(0, 1)
        seconds = time.perf_counter() - start
        if observation.dim() == 4:  # a batch of one, as the sampler returns it
            image, dip_image = image.unsqueeze(0), dip_image.unsqueeze(0)
        return SampleResult(image=image, dip_image=dip_image, nfe=0, dip_iterations=iterations,
                            seconds={"dip": seconds, "diffusion": 0.0, "total": seconds})


class CBM3DBaseline:
    """Colour BM3D (Dabov et al. 2007) through the optional ``bm3d`` package; denoising only.

    The reference a user would pick instead of a learned method.  ``bm3d`` must be installed
    (``pip install dipprior[bm3d]``); an operator other than :class:`Denoise` raises
    ``ValueError``.
    """

    def __init__(self) -> None:
        try:
            import bm3d  # noqa: F401
        except ImportError as exc:
            raise ImportError("CBM3DBaseline needs the optional 'bm3d' package: "
                              "pip install dipprior[bm3d]") from exc

    def __repr__(self) -> str:
        return "CBM3DBaseline()"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None) -> SampleResult:
        check_operator(operator)
        if not operator.identity:
            raise ValueError(f"operator: CBM3D only denoises, got {operator!r}")
        check_observation(observation, operator)
        start = time.perf_counter()
        image = cbm3d(observation.reshape(observation.shape[-3:]), operator.noise_sigma)
        seconds = time.perf_counter() - start
        image = image.to(observation.device).reshape(observation.shape)
        return SampleResult(image=image, nfe=0,
                            seconds={"dip": 0.0, "diffusion": 0.0, "total": seconds})


class ClassicalBaseline:
    """The classical restoration alone (the operator's
    :meth:`~dipprior.operators.Operator.classical`): scikit-image's biharmonic inpainting for
    holes, bicubic up-sampling for low resolution, Wiener deconvolution for blur.  NFE 0,
    clamped to [0, 1].  Denoising has CBM3D (:class:`CBM3DBaseline`) instead: an operator with
    ``A = I`` raises ``ValueError``.
    """

    def __repr__(self) -> str:
        return "ClassicalBaseline()"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None) -> SampleResult:
        check_operator(operator)
        if operator.identity:
            raise ValueError("operator: the classical peer of Gaussian denoising is CBM3D "
                             "(CBM3DBaseline), not the noisy observation")
        check_observation(observation, operator)
        start = time.perf_counter()
        image = operator.classical(observation.reshape(observation.shape[-3:]).float())
        seconds = time.perf_counter() - start
        image = image.clamp(0, 1)
        if observation.dim() == 4:
            image = image.unsqueeze(0)
        return SampleResult(image=image, nfe=0,
                            seconds={"dip": 0.0, "start": seconds, "diffusion": 0.0,
                                     "total": seconds})


def alone(dip: Any, operator: Operator) -> Any:
    """The DIP stage of DIP alone: the sampler's (:func:`~dipprior.pipeline.plan.dip_stage`),
    with ES-WMV where that stage stops by the prior's reference restoration."""
    config = dip_stage(dip, operator)
    if getattr(config, "early_stopping", None) == "reference":
        return config.replace(early_stopping="wmv")
    return config
