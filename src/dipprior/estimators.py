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


#: patch sides tried by the PCA estimate, largest first; a side is used when the image holds at
#: least ``_PATCHES_PER_DIM`` patches per patch dimension (else the next, down to MAD)
_PCA_SIDES = (7, 5, 3)
_PATCHES_PER_DIM = 20
#: more overlapping patches than this are subsampled on a regular grid (memory, not accuracy)
_MAX_PATCHES = 2**16


def estimate_noise_sigma(y: torch.Tensor, method: str = "pca") -> torch.Tensor:
    """Gaussian noise std of (N, C, H, W) images on the [0, 1] scale, one value per image.

    * ``"pca"`` (default): Chen, Zhu and Heng, "An Efficient Statistical Method for Image Noise
      Level Estimation" (ICCV 2015).  The covariance of all overlapping 7x7xC patches has, for
      white noise of variance ``s^2``, eigenvalues ``s^2`` in every direction the image content
      leaves free; those form the smallest eigenvalues, a set whose mean equals its median.  The
      estimate is the mean of the largest tail of sorted eigenvalues whose mean is at most its
      median.  Within 1.5% of the true sigma (5 to 50 on the 0..255 scale) on 128x128 photo
      crops; smaller images use 5x5 or 3x3 patches, and ones too small for those fall back to
      ``"mad"``.  Linearly dependent channels (a grey image stored as RGB) are estimated one
      channel at a time and averaged.
    * ``"mad"``: Donoho's wavelet estimate, ``median(|HH|) / 0.6745`` of the finest Haar diagonal
      sub-band, averaged over channels (as :func:`skimage.restoration.estimate_sigma`); texture
      leaks into that band, so it reads high (about 7% at sigma = 25, 65% at sigma = 5 on
      128x128 photo crops).
    """
    if method not in ("pca", "mad"):
        raise ValueError(f"method: expected 'pca' or 'mad', got {method!r}")
    if y.dim() != 4:
        raise ValueError(f"y: expected (N, C, H, W) images, got shape {tuple(y.shape)}")
    if method == "pca":
        side = next((d for d in _PCA_SIDES
                     if (y.shape[-2] - d + 1) * (y.shape[-1] - d + 1)
                     >= _PATCHES_PER_DIM * y.shape[1] * d * d), None)
        if side is not None:
            return torch.stack([_pca_sigma(image, side) for image in y]).to(y.device)
    hh = haar_diagonal(y.float())
    return (hh.abs().flatten(-2).median(-1).values / 0.6745).mean(-1)


def _pca_sigma(image: torch.Tensor, side: int) -> torch.Tensor:
    """Chen et al.'s estimate for one (C, H, W) image with ``side`` x ``side`` patches."""
    h, w = image.shape[-2] - side + 1, image.shape[-1] - side + 1
    stride = max(1, math.ceil(math.sqrt(h * w / _MAX_PATCHES)))
    patches = torch.nn.functional.unfold(image.detach().double().cpu()[None], side,
                                         stride=stride)[0].T
    patches = patches - patches.mean(0)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / patches.shape[0]).flip(0)
    if image.shape[0] > 1 and float(eigenvalues[-1]) <= 1e-9 * float(eigenvalues[0]):
        # linearly dependent channels (a grey image as RGB, one channel a copy of another): the
        # noise leaves directions free of any variance, which would read as sigma = 0; the
        # channels one at a time do not
        return torch.stack([_pca_sigma(image[c:c + 1], side)
                            for c in range(image.shape[0])]).mean()
    for i in range(eigenvalues.numel()):
        tail = eigenvalues[i:]
        if tail.mean() <= tail.median():
            return tail.mean().clamp_min(0).sqrt().float()
    return eigenvalues[-1].clamp_min(0).sqrt().float()


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
