"""Noise and error estimates that need no clean image (used by DIP stopping and the sampler).

All work on the [0, 1] image scale.  They sit here, below both :mod:`dipprior.dip` and
:mod:`dipprior.pipeline`, so neither reaches into the other.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["haar_diagonal", "estimate_noise_sigma", "estimate_error_std"]


def haar_diagonal(x: torch.Tensor) -> torch.Tensor:
    """The finest diagonal Haar detail band (orthonormal) of ``(..., H, W)`` images, odd edges
    dropped: white noise of std ``s`` gives coefficients of std ``s``."""
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    return (x[..., 0::2, 0::2] - x[..., 1::2, 0::2] - x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 2


def estimate_noise_sigma(y: torch.Tensor) -> torch.Tensor:
    """Gaussian noise std of (N, C, H, W) images, one value per image (Donoho's wavelet MAD).

    ``median(|HH|) / 0.6745`` of the finest Haar diagonal sub-band, averaged over channels;
    image texture leaks into that band, so it tends to overestimate slightly (about 5% at
    sigma = 25/255 on 128x128 photo crops).
    """
    hh = haar_diagonal(y.float())
    return (hh.abs().flatten(-2).median(-1).values / 0.6745).mean(-1)


def estimate_error_std(image: torch.Tensor, observation: torch.Tensor, operator: Any) -> float:
    """Estimate the RMS error of ``image`` (an estimate of the clean image) without the clean image.

    ``sqrt(max(r^2 - sigma_y^2, s_hf^2))`` on the [0, 1] scale, where

    * ``r^2`` is the mean squared residual ``A image - y`` over the observed entries (those where
      ``A 1 != 0``) and ``sigma_y = operator.noise_sigma``: for an error ``e`` independent of the
      observation noise, ``E r^2 = ||A e||^2 / m + sigma_y^2``, so the excess over the known noise
      estimates the error the observation can see;
    * ``s_hf`` is Donoho's MAD noise estimate, ``median(|HH|) / 0.6745`` over the finest diagonal
      Haar sub-band of ``image`` (orthonormal, so white error of std ``s`` gives ``s``; natural
      images have sparse HH coefficients, so the median ignores edges and texture).  It sees the
      white part of the error, which the residual misses where the estimate has fitted part of
      the noise (the excess then shrinks, down to 0 for an exact fit of ``y``), and errors at
      scattered unobserved pixels (randomly missing pixels), where the residual is blind.

    The larger of the two is taken, not the sum: a white error independent of the noise shows
    up fully in both.  Smooth errors in unobserved regions (large holes, lost high frequencies
    under super-resolution) are invisible to both terms, so the estimate can be low there.
    """
    x = image.detach().float().reshape(-1, *image.shape[-3:])[0].cpu()
    y = observation.detach().float().reshape(-1, *observation.shape[-3:])[0].cpu()
    observed = operator.forward(torch.ones_like(x)) != 0
    residual = (operator.forward(x) - y)[observed]
    excess = float(residual.square().mean()) - operator.noise_sigma ** 2 if residual.numel() else 0
    s_hf = float(haar_diagonal(x).abs().median()) / 0.6745
    return math.sqrt(max(excess, s_hf ** 2, 0.0))
