"""Image quality metrics, and (from :mod:`dipprior.tables`) the results table every comparison in
this project is reported with.

Conventions (see ``docs/metrics.md``): images are in [0, 1] with data range 1; the prediction is
clamped to [0, 1]; the target must already lie in [0, 1]; nothing is ever min-max normalised or
rescaled, so a prediction that is off by a global factor is scored as wrong.

Every metric takes ``(pred, target)`` as torch tensors or numpy arrays of shape (3, H, W),
(H, W, 3), (N, 3, H, W) or (N, H, W, 3) (channel-first wins when both the first and the last axis
have size 3). A single image gives a float, a batch a numpy array of N per-image values.

Example:
    >>> import torch
    >>> from dipprior import metrics
    >>> clean = 0.99 * torch.rand(3, 32, 32, dtype=torch.float64)
    >>> round(metrics.psnr(clean + 0.01, clean), 6)
    40.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dipprior.tables import ResultsTable, results_table

__all__ = [
    "SSIM_MIN_SIZE",
    "ResultsTable",
    "ciede2000",
    "delta_e",
    "evaluate",
    "mae",
    "mse",
    "psnr",
    "results_table",
    "rgb_to_lab",
    "rgb_to_y",
    "ssim",
]

ArrayLike = torch.Tensor | np.ndarray
# The target may overshoot [0, 1] by this much (float rounding) before it is rejected.
TARGET_TOLERANCE = 1e-3
# SSIM settings of Wang et al. (2004), as scikit-image spells them.
SSIM_KWARGS = {
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": 1.0,
}
SSIM_MIN_SIZE = 11  # scikit-image's Gaussian window for sigma=1.5 (truncate=3.5) is 11x11


# ----------------------------------------------------------------------------- input handling


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.dtype.is_complex or not (x.dtype.is_floating_point):
            raise TypeError(f"{name}: expected a floating point image in [0, 1], got {x.dtype}")
        return x.detach().cpu().double().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        hint = " (convert 8/16-bit data with dipprior.io.to_tensor)" if x.dtype.kind in "ui" else ""
        raise TypeError(f"{name}: expected a floating point image in [0, 1], got {x.dtype}{hint}")
    return x.astype(np.float64)


def _to_nhwc(x: np.ndarray, name: str) -> np.ndarray:
    """(3,H,W) | (H,W,3) | (N,3,H,W) | (N,H,W,3), or 1 grey channel -> (N, H, W, 3)."""
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected shape (3, H, W), (H, W, 3), (N, 3, H, W) or (N, H, W, 3), "
            f"got {x.ndim} dimensions {x.shape}"
        )
    image = x if x.ndim == 4 else x[None]
    if image.shape[1] == 3:
        return np.moveaxis(image, 1, -1)
    if image.shape[-1] == 3:
        return image
    if image.shape[1] == 1:  # grey: scored as the RGB image of identical channels
        return np.repeat(np.moveaxis(image, 1, -1), 3, axis=-1)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    raise ValueError(f"{name}: expected 3 colour channels or 1 grey channel (first or last "
                     f"axis), got {x.shape}")


def _prepare(pred: Any, target: Any, crop_border: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and convert to float64 (N, H, W, 3); returns (pred, target, batched)."""
    p, t = _as_array(pred, "pred"), _as_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {p.shape} does not match target shape {t.shape}")
    batched = p.ndim == 4
    p, t = _to_nhwc(p, "pred"), _to_nhwc(t, "target")
    if p.shape[1] == 0 or p.shape[2] == 0 or p.shape[0] == 0:
        raise ValueError(f"pred: empty image of shape {p.shape}")
    for arr, name in ((p, "pred"), (t, "target")):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or inf")
    lo, hi = t.min(), t.max()
    if lo < -TARGET_TOLERANCE or hi > 1 + TARGET_TOLERANCE:
        raise ValueError(
            f"target: values must lie in [0, 1] (data range 1, never rescaled), got "
            f"[{lo:.4g}, {hi:.4g}]"
        )
    p, t = _crop(np.clip(p, 0.0, 1.0), crop_border), _crop(np.clip(t, 0.0, 1.0), crop_border)
    return p, t, batched


def _crop(x: np.ndarray, k: int) -> np.ndarray:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"crop_border: expected a non-negative int, got {k!r}")
    if k == 0:
        return x
    if 2 * k >= min(x.shape[1], x.shape[2]):
        raise ValueError(f"crop_border: {k} leaves nothing of a {x.shape[1]}x{x.shape[2]} image")
    return x[:, k:-k, k:-k]


def _result(values: list[float], batched: bool) -> float | np.ndarray:
    return np.asarray(values, dtype=np.float64) if batched else float(values[0])


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB in [0, 1] (..., 3), as in super-resolution papers (MATLAB's
    ``rgb2ycbcr``): Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, in [16/255, 235/255]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return 16.0 / 255.0 + rgb @ np.array([65.481, 128.553, 24.966]) / 255.0


# ----------------------------------------------------------------------------- metrics


def mse(pred: ArrayLike, target: ArrayLike, *, crop_border: int = 0) -> float | np.ndarray:
    """Mean squared error over all pixels and channels (data range 1)."""
    p, t, batched = _prepare(pred, target, crop_border)
    return _result([float(np.mean((a - b) ** 2)) for a, b in zip(p, t, strict=True)], batched)


def mae(pred: ArrayLike, target: ArrayLike, *, crop_border: int = 0) -> float | np.ndarray:
    """Mean absolute error over all pixels and channels (data range 1)."""
    p, t, batched = _prepare(pred, target, crop_border)
    return _result([float(np.mean(np.abs(a - b))) for a, b in zip(p, t, strict=True)], batched)


def psnr(
    pred: ArrayLike, target: ArrayLike, *, y_channel: bool = False, crop_border: int = 0
) -> float | np.ndarray:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)`` with data range 1.

    ``y_channel=True`` scores the BT.601 luma only (see :func:`rgb_to_y`), ``crop_border=k``
    ignores k pixels on every side; both as customary in super-resolution tables. Identical
    images give ``inf``.
    """
    p, t, batched = _prepare(pred, target, crop_border)
    if y_channel:
        p, t = rgb_to_y(p), rgb_to_y(t)
    values = []
    for a, b in zip(p, t, strict=True):
        err = float(np.mean((a - b) ** 2))
        values.append(math.inf if err == 0 else 10.0 * math.log10(1.0 / err))
    return _result(values, batched)


def ssim(
    pred: ArrayLike, target: ArrayLike, *, y_channel: bool = False, crop_border: int = 0
) -> float | np.ndarray:
    """Structural similarity of Wang et al. (2004), computed by scikit-image.

    Gaussian window sigma 1.5, population covariances, data range 1, averaged over channels
    (or on the BT.601 luma with ``y_channel=True``). Images must be at least 11x11.
    """
    from skimage.metrics import structural_similarity

    p, t, batched = _prepare(pred, target, crop_border)
    if min(p.shape[1:3]) < SSIM_MIN_SIZE:
        raise ValueError(
            f"pred: SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} "
            f"(after crop_border), got {p.shape[1]}x{p.shape[2]}"
        )
    if y_channel:
        p, t = rgb_to_y(p), rgb_to_y(t)
    axis = None if y_channel else -1
    values = [
        float(structural_similarity(a, b, channel_axis=axis, **SSIM_KWARGS))
        for a, b in zip(p, t, strict=True)
    ]
    return _result(values, batched)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values in [0, 1] (..., 3), through colour-science.

    sRGB is decoded with the IEC 61966-2-1 transfer function, converted to XYZ and then to Lab
    under the CIE 1931 2-degree D65 white point. L is in [0, 100].
    """
    import colour

    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    xyz = colour.sRGB_to_XYZ(np.asarray(rgb, dtype=np.float64), illuminant=d65)
    return colour.XYZ_to_Lab(xyz, illuminant=d65)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference between Lab arrays (..., 3), through colour-science."""
    import colour

    return np.asarray(colour.delta_E(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64),
                                     method="CIE 2000"))


def delta_e(pred: ArrayLike, target: ArrayLike, *, crop_border: int = 0) -> float | np.ndarray:
    """Mean CIEDE2000 colour difference over pixels (sRGB -> XYZ -> Lab under D65)."""
    p, t, batched = _prepare(pred, target, crop_border)
    pairs = zip(p, t, strict=True)
    values = [float(np.mean(ciede2000(rgb_to_lab(a), rgb_to_lab(b)))) for a, b in pairs]
    return _result(values, batched)


def evaluate(
    pred: ArrayLike, target: ArrayLike, *, y_channel: bool = False, crop_border: int = 0
) -> dict[str, float | np.ndarray]:
    """All metrics at once: ``{"psnr", "ssim", "mse", "mae", "delta_e"}``.

    Values are floats for one image and per-image numpy arrays for a batch. ``crop_border``
    applies to every metric, ``y_channel`` to PSNR and SSIM only (label such tables accordingly).
    """
    return {
        "psnr": psnr(pred, target, y_channel=y_channel, crop_border=crop_border),
        "ssim": ssim(pred, target, y_channel=y_channel, crop_border=crop_border),
        "mse": mse(pred, target, crop_border=crop_border),
        "mae": mae(pred, target, crop_border=crop_border),
        "delta_e": delta_e(pred, target, crop_border=crop_border),
    }


# ----------------------------------------------------------------------------- results table
