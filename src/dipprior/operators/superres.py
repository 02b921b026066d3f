"""Super-resolution: ``SuperResolution`` with MATLAB-style antialiased bicubic or box kernels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dipprior.operators.base import (
    Operator,
    Tensor,
    _check_classical,
    _check_sigma,
    _usable,
)
from dipprior.operators.registry import Param, Task, register

# The largest factor accepted: x64 already turns a 4K image into 64x36 pixels, and the bicubic
# taps grow with the factor (a typo such as 10**9 would ask for tens of GiB).
MAX_FACTOR = 64

# ----------------------------------------------------------------------------- super-resolution


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize``)."""
    t = np.abs(t)
    return np.where(
        t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1,
        np.where(t < 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0),
    )


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        raise TypeError(f"factor: expected an int, got {type(factor).__name__}")
    if not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"factor: expected an int in 1..{MAX_FACTOR}, got {factor}")
    return int(factor)


def bicubic_taps(factor: int) -> tuple[np.ndarray, int]:
    """Weights of antialiased bicubic downsampling by ``factor`` and the left padding they need.

    Low-resolution pixel j averages high-resolution pixels ``j * factor - pad + k`` with weight
    ``taps[k]``: the cubic kernel stretched by ``factor`` (MATLAB ``imresize(x, 1/factor)``).
    """
    factor = _check_factor(factor)
    center = (factor - 1) / 2.0  # first LR pixel centre in HR coordinates
    idx = np.arange(math.ceil(center - 2 * factor), math.floor(center + 2 * factor) + 1)
    w = _cubic((idx - center) / factor)
    keep = np.nonzero(w)[0]
    idx, w = idx[keep[0] : keep[-1] + 1], w[keep[0] : keep[-1] + 1]
    return w / w.sum(), int(-idx[0])


def _sym_pad(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Half-sample symmetric padding (``numpy.pad(mode="symmetric")``) along ``dim``."""
    n = x.shape[dim]
    parts = [x]
    if before:
        parts.insert(0, x.narrow(dim, 0, before).flip(dim))
    if after:
        parts.append(x.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim=dim)


def _sym_pad_adjoint(g: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Transpose of :func:`_sym_pad`: fold the padded borders back onto the image."""
    n = g.shape[dim] - before - after
    out = g.narrow(dim, before, n).clone()
    if before:
        out.narrow(dim, 0, before).add_(g.narrow(dim, 0, before).flip(dim))
    if after:
        out.narrow(dim, n - after, after).add_(g.narrow(dim, before + n, after).flip(dim))
    return out


class SuperResolution(Operator):
    """Downsampling by an integer ``factor``: ``y = D x + sigma n`` at 1/factor the size.

    ``kernel="bicubic"`` is antialiased bicubic decimation with symmetric borders, as MATLAB's
    ``imresize(x, 1/factor)`` (the usual SR benchmark degradation); ``kernel="box"`` averages
    ``factor x factor`` blocks. The height and width of ``x`` must be multiples of ``factor``.
    """

    task = "sr"
    classical_name = "Bicubic"

    def __init__(self, factor: int, kernel: str = "bicubic", sigma: float = 0.0) -> None:
        factor = _check_factor(factor)
        if kernel not in ("bicubic", "box"):
            raise ValueError(f"kernel: expected 'bicubic' or 'box', got {kernel!r}")
        self.factor = factor
        self.kernel = kernel
        self.noise_sigma = _check_sigma(sigma)
        taps, self._pad = bicubic_taps(self.factor)
        self._taps = torch.from_numpy(taps)
        self._cache: dict[tuple[torch.device, torch.dtype, int], tuple[Tensor, Tensor]] = {}

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        *lead, h, w = input_shape
        f = self.factor
        for side, size in (("height", h), ("width", w)):
            if size % f:
                raise ValueError(
                    f"factor: image {side} {size} is not divisible by the factor {f}"
                )
        return (*lead, h // f, w // f)

    def input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        *lead, h, w = output_shape
        return (*lead, h * self.factor, w * self.factor)

    def _weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.device, x.dtype, x.shape[1])
        if key not in self._cache or not _usable(self._cache[key][0]):
            t = self._taps.to(device=x.device, dtype=x.dtype)
            c = x.shape[1]
            self._cache[key] = (t.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                                t.view(1, 1, -1, 1).repeat(c, 1, 1, 1))
        return self._cache[key]

    def _forward(self, x: Tensor) -> Tensor:
        self.output_shape(x.shape)
        f = self.factor
        if self.kernel == "box":
            return F.avg_pool2d(x, f)
        if f == 1:
            return x
        p, (h, w) = self._pad, x.shape[-2:]
        if p > min(h, w):
            raise ValueError(f"x: image {h}x{w} too small for bicubic x{f} (needs >= {p})")
        kh, kv = self._weights(x)
        c = x.shape[1]
        x = F.conv2d(_sym_pad(x, p, p, 3), kh, stride=(1, f), groups=c)
        return F.conv2d(_sym_pad(x, p, p, 2), kv, stride=(f, 1), groups=c)

    def _adjoint(self, y: Tensor) -> Tensor:
        f = self.factor
        if self.kernel == "box":
            return y.repeat_interleave(f, -2).repeat_interleave(f, -1) / f**2
        if f == 1:
            return y
        p = self._pad
        h, w = y.shape[-2] * f, y.shape[-1] * f
        kh, kv = self._weights(y)
        c = y.shape[1]
        t = kv.shape[2]
        g = F.conv_transpose2d(y, kv, stride=(f, 1), groups=c,
                               output_padding=(h + 2 * p - t - (y.shape[-2] - 1) * f, 0))
        g = _sym_pad_adjoint(g, p, p, 2)
        g = F.conv_transpose2d(g, kh, stride=(1, f), groups=c,
                               output_padding=(0, w + 2 * p - t - (y.shape[-1] - 1) * f))
        return _sym_pad_adjoint(g, p, p, 3)

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor | None:
        if self.kernel != "box" and self.factor > 1:
            return None
        # x = x0 + A^T (A A^T + lam)^-1 (y - A x0), and A A^T = I / f^2 for block averaging.
        f2 = float(self.factor**2) if self.kernel == "box" else 1.0
        return x0 + self._adjoint((y - self._forward(x0)) / (1.0 / f2 + lam))

    def classical(self, y: Tensor) -> Tensor:
        return bicubic(y, self)

    def __repr__(self) -> str:
        return (f"SuperResolution(factor={self.factor}, kernel={self.kernel!r}, "
                f"noise_sigma={self.noise_sigma:g})")


# -------------------------------------------------------------- its classical restoration

def bicubic(observation: torch.Tensor, operator: SuperResolution) -> torch.Tensor:
    """Up-sample a low-resolution observation by the operator's factor with Pillow's bicubic
    (cubic convolution, a = -0.5: MATLAB's ``imresize(y, factor)``), not clamped.

    >>> from dipprior.operators import SuperResolution
    >>> bicubic(torch.full((3, 4, 4), 0.25), SuperResolution(2)).shape
    torch.Size([3, 8, 8])
    """
    from PIL import Image

    y = _check_classical(observation, operator, SuperResolution, "bicubic up-sampling")
    h, w = operator.input_shape(y.shape)[-2:]
    channels = [np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.Resampling.BICUBIC))
                for c in y.detach().cpu().float().numpy()]
    return torch.from_numpy(np.stack(channels)).to(y.device, torch.float32)


# ----------------------------------------------------------------------------- its task

def _make_sr(*, real: bool, factor: int, downsample: str) -> SuperResolution:
    if downsample not in ("bicubic", "box"):
        raise ValueError(f"downsample: expected 'bicubic' or 'box', got {downsample!r}")
    return SuperResolution(factor, downsample)


register(Task(
    "sr", "super-resolution", _make_sr,
    (Param("factor", int, 4, "the down-sampling factor"),
     Param("downsample", str, "bicubic", "the down-sampling kernel: bicubic (MATLAB's imresize) "
           "or box")),
    label=lambda p: f"x{p['factor']}",
    heading=lambda p: f"super-resolution x{p['factor']} ({p['downsample']})"))
