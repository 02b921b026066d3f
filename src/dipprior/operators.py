"""Linear degradation operators: denoising, inpainting and super-resolution.

Every operator ``A`` maps a clean image ``x`` to an observation ``y = A x + n`` with Gaussian noise
of standard deviation :attr:`Operator.noise_sigma` (on the [0, 1] scale). All methods take
``(C, H, W)`` or ``(N, C, H, W)`` float tensors on any device and return the same rank.

The operators are linear, so ``forward``, ``adjoint``, ``pseudo_inverse`` and ``proximal`` are
scale-agnostic: they give the same answer for images in [0, 1] and in [-1, 1]. Only ``degrade``
(which adds noise of ``noise_sigma``) assumes [0, 1]; and ``proximal`` weighs the data term by
``1 / sigma_y**2``, so when working in [-1, 1] pass ``sigma=2 * op.noise_sigma``.

Example:
    >>> import torch
    >>> from dipprior.operators import SuperResolution
    >>> op = SuperResolution(4)
    >>> x = torch.rand(3, 32, 32)
    >>> op(x).shape
    torch.Size([3, 8, 8])
    >>> y = op.degrade(x, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(op(op.pseudo_inverse(y)), y, atol=1e-4)
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Denoise",
    "Inpaint",
    "Operator",
    "SuperResolution",
    "check_image",
    "mask_from_image",
    "random_box_mask",
    "random_pixel_mask",
]

Tensor = torch.Tensor
Rho = float | Tensor


# ----------------------------------------------------------------------------- validation


def check_image(x: Tensor, name: str, *, low: float = -0.5, high: float = 1.5) -> None:
    """Raise a clear error unless ``x`` is a finite float (C, H, W) or (N, C, H, W) tensor in range.

    ``low``/``high`` bound the values; the defaults accept [0, 1] images with room for noise but
    reject e.g. 0..255 images. This synchronises with the device, so it is not called per step.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor, got dtype {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"{name}: expected shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: empty tensor of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < low or hi > high:
        raise ValueError(
            f"{name}: values span [{lo:.3g}, {hi:.3g}], far outside [0, 1] (allowed "
            f"[{low:.3g}, {high:.3g}]); images must be floats in [0, 1], not 0..255 or [-1, 1]"
        )


def _as4d(x: Tensor, name: str) -> tuple[Tensor, bool]:
    """(C, H, W) -> (1, C, H, W); returns the tensor and whether to squeeze the result."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"{name}: expected shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")


def _rho4d(rho: Rho, like: Tensor) -> Tensor:
    """rho as a float or a per-image tensor of N values -> (N or 1, 1, 1, 1) on like's device."""
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    if r.dim() > 1 or (r.dim() == 1 and r.numel() not in (1, like.shape[0])):
        raise ValueError(f"rho: expected a number or {like.shape[0]} values, got {tuple(r.shape)}")
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("rho: must be finite and >= 0")
    return r.reshape(-1, 1, 1, 1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-image inner product of (N, C, H, W) tensors -> (N, 1, 1, 1)."""
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def _randn(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    return noise.to(like.device)


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive (semi-)definite ``apply``, per image.

    Each image of the (N, C, H, W) batch has its own step sizes; iteration stops when every
    residual norm is below ``tol * ||b||`` (or ``tol`` when ``b`` is zero). Starting from ``x0``
    on a singular but consistent system converges to the solution closest to ``x0``.
    """
    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = _dot(r, r)
    threshold = (tol * _dot(b, b).sqrt()).clamp_min(tol) ** 2
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iter):
        if bool((rs <= threshold).all()):
            break
        ap = apply(p)
        alpha = torch.where(rs > threshold, rs / _dot(p, ap).clamp_min(tiny), 0.0)
        x.add_(alpha * p)
        r.sub_(alpha * ap)
        rs_new = _dot(r, r)
        beta = torch.where(rs > tiny, rs_new / rs.clamp_min(tiny), 0.0)
        p = r + beta * p
        rs = rs_new
    return x


# ----------------------------------------------------------------------------- base class


class Operator:
    """A linear degradation ``y = A x + noise_sigma * n``.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint` on (N, C, H, W) tensors and, where
    a closed form exists, :meth:`_prox` (the solution of ``(A^T A + lam I) x = A^T y + lam x0``).
    """

    noise_sigma: float = 0.0

    # -- to implement
    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor | None:
        return None  # no closed form: conjugate gradient

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``A x`` for ``x`` of ``input_shape`` ((C, H, W) or (N, C, H, W))."""
        return tuple(input_shape)

    def input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the image ``x`` whose observation ``A x`` has ``output_shape``."""
        return tuple(output_shape)

    # -- public API
    def forward(self, x: Tensor) -> Tensor:
        """Apply the noiseless operator, ``A x``."""
        x4, squeeze = _as4d(x, "x")
        y = self._forward(x4)
        return y.squeeze(0) if squeeze else y

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        """Apply the transpose, ``A^T y`` (so that ``<A x, y> = <x, A^T y>``)."""
        y4, squeeze = _as4d(y, "y")
        x = self._adjoint(y4)
        return x.squeeze(0) if squeeze else x

    def degrade(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate an observation of the clean [0, 1] image ``x``: ``A x + noise_sigma * n``.

        The noise is Gaussian and not clipped (the CBSD68 protocol).
        """
        check_image(x, "x")
        y = self.forward(x)
        if self.noise_sigma > 0:
            y = y + self.noise_sigma * _randn(y.shape, y, generator)
        return self._mask_observation(y)

    def _mask_observation(self, y: Tensor) -> Tensor:
        return y

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """The minimum-norm least-squares image ``A^+ y`` (``A A^+ y = y`` when ``A`` is onto)."""
        y4, squeeze = _as4d(y, "y")
        x0 = y4.new_zeros(self.input_shape(y4.shape))
        x = self._solve(x0, y4, x0.new_zeros(1, 1, 1, 1))
        return x.squeeze(0) if squeeze else x

    def proximal(self, x0: Tensor, y: Tensor, rho: Rho, *, sigma: float | None = None) -> Tensor:
        """``argmin_x ||y - A x||^2 / (2 sigma^2) + rho / 2 ||x - x0||^2``.

        ``sigma`` defaults to :attr:`noise_sigma` and must be on the scale of ``x0`` and ``y``
        (double it when working in [-1, 1]). ``rho`` is a number or one value per image. With
        ``sigma = 0`` the data term is a hard constraint: the result is the point of
        ``{x : A x = y}`` closest to ``x0`` (for inpainting, ``x0`` with the known pixels
        replaced by ``y``). Closed form where there is one, conjugate gradient otherwise.
        """
        x4, squeeze = _as4d(x0, "x0")
        y4, _ = _as4d(y, "y")
        self._check_pair(x4, y4)
        lam = self._lam(x4, rho, sigma)
        x = self._solve(x4, y4, lam)
        return x.squeeze(0) if squeeze else x

    def proximal_cg(
        self,
        x0: Tensor,
        y: Tensor,
        rho: Rho,
        *,
        sigma: float | None = None,
        tol: float = 1e-6,
        max_iter: int = 200,
    ) -> Tensor:
        """:meth:`proximal` by conjugate gradient on the normal equations, for any operator."""
        x4, squeeze = _as4d(x0, "x0")
        y4, _ = _as4d(y, "y")
        self._check_pair(x4, y4)
        lam = self._lam(x4, rho, sigma)
        x = self._cg(x4, y4, lam, tol=tol, max_iter=max_iter)
        return x.squeeze(0) if squeeze else x

    # -- helpers
    def _lam(self, x: Tensor, rho: Rho, sigma: float | None) -> Tensor:
        s = self.noise_sigma if sigma is None else float(sigma)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"sigma: must be finite and >= 0, got {sigma}")
        return _rho4d(rho, x) * s**2

    def _check_pair(self, x: Tensor, y: Tensor) -> None:
        expected = self.output_shape(x.shape)
        if tuple(y.shape[1:]) != expected[1:] or y.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"y: shape {tuple(y.shape)} does not match A(x0) of shape {expected}"
            )

    def _solve(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        x = self._prox(x0, y, lam)
        return x if x is not None else self._cg(x0, y, lam)

    def _cg(self, x0: Tensor, y: Tensor, lam: Tensor, *, tol: float = 1e-6,
            max_iter: int = 200) -> Tensor:
        def normal(v: Tensor) -> Tensor:
            return self._adjoint(self._forward(v)) + lam * v

        b = self._adjoint(y.expand(self.output_shape(x0.shape))) + lam * x0
        return conjugate_gradient(normal, b, x0, tol=tol, max_iter=max_iter)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise_sigma={self.noise_sigma:g})"


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma: expected a number, got {type(sigma).__name__}")
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma: must be finite and >= 0, got {sigma}")
    if sigma > 1:
        raise ValueError(
            f"sigma: {sigma:g} is on the 0..255 scale; operators take sigma on the [0, 1] scale "
            f"(e.g. {sigma:g}/255 = {sigma / 255:.4f})"
        )
    return sigma


# ----------------------------------------------------------------------------- denoising


class Denoise(Operator):
    """Additive white Gaussian noise: ``A = I``, ``y = x + sigma n`` (sigma on the [0, 1] scale).

    ``Denoise(0.0)`` is the identity, used for fitting without a known noise level.
    """

    def __init__(self, sigma: float) -> None:
        self.noise_sigma = _check_sigma(sigma)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        return x0 + (y - x0) / (1.0 + lam)


# ----------------------------------------------------------------------------- inpainting


def _mask_tensor(mask: Tensor | np.ndarray) -> Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() != 3 or m.shape[0] not in (1, 3):
        raise ValueError(
            f"mask: expected shape (H, W), (1, H, W) or (3, H, W), got {tuple(m.shape)}"
        )
    m = m.detach().to(torch.float32)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask: values must be 0 (missing) or 1 (known)")
    return m


class Inpaint(Operator):
    """Missing pixels: ``y = M * (x + sigma n)`` with a binary mask ``M`` (1 = known pixel).

    ``mask`` is (H, W), (1, H, W) (same for all channels) or (3, H, W). Unknown pixels of the
    observation are 0. See :func:`random_pixel_mask`, :func:`random_box_mask`,
    :func:`mask_from_image`.
    """

    def __init__(self, mask: Tensor | np.ndarray, sigma: float = 0.0) -> None:
        self.mask = _mask_tensor(mask)
        self.noise_sigma = _check_sigma(sigma)
        self._cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @property
    def known_fraction(self) -> float:
        return float(self.mask.mean())

    def _m(self, x: Tensor) -> Tensor:
        """The mask on x's device and dtype, checked against x's shape (cached per device)."""
        if x.shape[-2:] != self.mask.shape[-2:] or (
            self.mask.shape[0] == 3 and x.shape[-3] != 3
        ):
            raise ValueError(
                f"mask: shape {tuple(self.mask.shape)} does not match image of shape "
                f"{tuple(x.shape)}"
            )
        key = (x.device, x.dtype)
        m = self._cache.get(key)
        if m is None:
            m = self._cache[key] = self.mask.to(device=x.device, dtype=x.dtype)
        return m

    def _forward(self, x: Tensor) -> Tensor:
        return x * self._m(x)

    _adjoint = _forward

    def _mask_observation(self, y: Tensor) -> Tensor:
        return y * self._m(y)

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        # (M + lam) x = M y + lam x0 with M in {0, 1}; the unknown pixels keep x0, also at lam = 0.
        return x0 + self._m(x0) * (y - x0) / (1.0 + lam)

    def __repr__(self) -> str:
        return (f"Inpaint(mask={tuple(self.mask.shape)}, known={self.known_fraction:.3f}, "
                f"noise_sigma={self.noise_sigma:g})")


def _spatial_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: expected (H, W) or (C, H, W) with positive sizes, got {shape}")
    return shape


def random_pixel_mask(
    shape: Sequence[int], keep: float, generator: torch.Generator | None = None
) -> Tensor:
    """A mask with exactly ``round(keep * n)`` known entries chosen uniformly at random.

    ``shape`` (H, W) gives a mask shared by all channels; (C, H, W) drops entries per channel.

    Example:
        >>> m = random_pixel_mask((4, 5), keep=0.5, generator=torch.Generator().manual_seed(0))
        >>> int(m.sum())
        10
    """
    shape = _spatial_shape(shape)
    if not 0.0 <= float(keep) <= 1.0:
        raise ValueError(f"keep: must be in [0, 1], got {keep}")
    n = math.prod(shape)
    order = torch.randperm(n, generator=generator)
    mask = torch.zeros(n)
    mask[order[: round(float(keep) * n)]] = 1.0
    return mask.reshape(shape)


def random_box_mask(
    shape: Sequence[int],
    boxes: int = 1,
    size: tuple[float, float] = (0.2, 0.4),
    generator: torch.Generator | None = None,
) -> Tensor:
    """A mask of ones with ``boxes`` random rectangular holes (zeros).

    Each side of a box is a uniform random fraction of the image side in ``size``; the box lies
    fully inside the image. ``shape`` is (H, W) or (C, H, W) (holes through all channels).
    """
    shape = _spatial_shape(shape)
    lo, hi = (float(s) for s in size)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"size: expected 0 < low <= high <= 1, got {size}")
    if boxes < 0:
        raise ValueError(f"boxes: must be >= 0, got {boxes}")
    h, w = shape[-2:]
    mask = torch.ones(shape)
    for _ in range(boxes):
        u = torch.rand(4, generator=generator).tolist()
        bh = max(1, round((lo + (hi - lo) * u[0]) * h))
        bw = max(1, round((lo + (hi - lo) * u[1]) * w))
        top = min(int(u[2] * (h - bh + 1)), h - bh)
        left = min(int(u[3] * (w - bw + 1)), w - bw)
        mask[..., top : top + bh, left : left + bw] = 0.0
    return mask


def mask_from_image(path: str | os.PathLike, threshold: float = 0.5) -> Tensor:
    """Read a mask image: pixels brighter than ``threshold`` (of full scale) are known (1).

    Colour masks are averaged over channels first; returns (H, W) float32 of 0 and 1 (the
    convention of the DIP reference masks: white = known, black = hole).
    """
    from skimage import io as skio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        array = np.asarray(skio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any decoder failure
        raise ValueError(f"path: cannot read {str(path)!r} as an image ({exc})") from exc
    scale = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else 1.0
    array = array.astype(np.float64) / scale
    if array.ndim == 3:
        array = array[..., :3].mean(axis=-1) if array.shape[-1] in (3, 4) else array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"path: {str(path)!r} is not a 2-D mask image (shape {array.shape})")
    return torch.from_numpy((array > threshold).astype(np.float32))


# ----------------------------------------------------------------------------- super-resolution


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize``)."""
    t = np.abs(t)
    return np.where(
        t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1,
        np.where(t < 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0),
    )


def bicubic_taps(factor: int) -> tuple[np.ndarray, int]:
    """Weights of antialiased bicubic downsampling by ``factor`` and the left padding they need.

    Low-resolution pixel j averages high-resolution pixels ``j * factor - pad + k`` with weight
    ``taps[k]``: the cubic kernel stretched by ``factor`` (MATLAB ``imresize(x, 1/factor)``).
    """
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

    def __init__(self, factor: int, kernel: str = "bicubic", sigma: float = 0.0) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
            raise TypeError(f"factor: expected an int, got {type(factor).__name__}")
        if factor < 1:
            raise ValueError(f"factor: must be >= 1, got {factor}")
        if kernel not in ("bicubic", "box"):
            raise ValueError(f"kernel: expected 'bicubic' or 'box', got {kernel!r}")
        self.factor = int(factor)
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
        if key not in self._cache:
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

    def __repr__(self) -> str:
        return (f"SuperResolution(factor={self.factor}, kernel={self.kernel!r}, "
                f"noise_sigma={self.noise_sigma:g})")
