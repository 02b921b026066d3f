"""The methods DIP->DDPM is compared with besides its own ``init`` variants: DIP alone, and the
classical peers a user would pick instead (biharmonic, bicubic, CBM3D)."""

from __future__ import annotations

import time
from typing import Any

import torch

from dipprior._tensor import default_device
from dipprior.classical import classical_start
from dipprior.denoisers import cbm3d
from dipprior.operators import Denoise, Operator
from dipprior.pipeline.checks import check_initial_image, check_observation, check_operator
from dipprior.pipeline.result import SampleResult
from dipprior.pipeline.sampler import fit_dip

__all__ = ["CBM3DBaseline", "ClassicalBaseline", "DIPBaseline"]


class DIPBaseline:
    """Deep Image Prior alone: the DIP fit's output is the restoration (NFE 0).

    ``DIPBaseline(config)(observation, operator, seed=0)`` -> :class:`SampleResult`.
    """

    def __init__(self, dip: Any = None, *, device: str | torch.device | None = None,
                 progress: bool = True) -> None:
        self.dip = dip  # None: DIPConfig() at fit time
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
            dip_image, result = fit_dip(y, operator, self.dip, seed=seed, device=dev,
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
        if not isinstance(operator, Denoise):
            raise ValueError(f"operator: CBM3D only denoises, got {operator!r}")
        check_observation(observation, operator)
        start = time.perf_counter()
        image = cbm3d(observation.reshape(observation.shape[-3:]), operator.noise_sigma)
        seconds = time.perf_counter() - start
        image = image.to(observation.device).reshape(observation.shape)
        return SampleResult(image=image, nfe=0,
                            seconds={"dip": 0.0, "diffusion": 0.0, "total": seconds})


class ClassicalBaseline:
    """The classical restoration alone (:func:`~dipprior.classical.classical_start`):
    scikit-image's biharmonic inpainting for holes, bicubic up-sampling for low resolution.
    NFE 0, clamped to [0, 1].  Gaussian denoising has CBM3D (:class:`CBM3DBaseline`) instead:
    a :class:`Denoise` operator raises ``ValueError``.
    """

    def __repr__(self) -> str:
        return "ClassicalBaseline()"

    def __call__(self, observation: torch.Tensor, operator: Operator, seed: int = 0,
                 ground_truth: torch.Tensor | None = None) -> SampleResult:
        check_operator(operator)
        if isinstance(operator, Denoise):
            raise ValueError("operator: the classical peer of Gaussian denoising is CBM3D "
                             "(CBM3DBaseline), not the noisy observation")
        check_observation(observation, operator)
        start = time.perf_counter()
        image = classical_start(observation.reshape(observation.shape[-3:]).float(), operator)
        seconds = time.perf_counter() - start
        image = image.clamp(0, 1)
        if observation.dim() == 4:
            image = image.unsqueeze(0)
        return SampleResult(image=image, nfe=0,
                            seconds={"dip": 0.0, "start": seconds, "diffusion": 0.0,
                                     "total": seconds})
