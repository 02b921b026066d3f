"""Deblurring: ``Blur``, a per-channel convolution with circular boundary computed by the FFT,
and the Gaussian and camera-shake kernels of the deblurring benchmarks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from dipprior.operators.base import (
    CLASSICAL_T0,
    DIP_BUDGET,
    Operator,
    Tensor,
    _as4d,
    _check_classical,
    _check_sigma,
    _usable,
    scaled_t0,
)
from dipprior.operators.registry import OperatorFactory, Param, Task, noise_level, register

__all__ = ["DEBLUR_BLUR", "DEBLUR_SIGMA", "Blur", "gaussian_kernel", "motion_kernel",
           "parse_blur"]

#: the deblurring benchmarks' setting, the default of ``make_task("deblur")``, the CLI and the
#: demo: a Gaussian of std 2 (13x13) and noise of std 2.55 on 0..255 (0.01 on [0, 1])
DEBLUR_BLUR, DEBLUR_SIGMA = "gaussian:2", 2.55

# kernels larger than this are refused (a typo would ask for a huge FFT of the kernel alone)
MAX_KERNEL = 255
#: a kernel's sum must be at least this fraction of its magnitude (the sum of its entries'
#: absolute values): normalising a kernel whose entries all but cancel would scale it by up to
#: 1e15 and amplify every frequency but the mean, which is no blur
MIN_KERNEL_SUM = 0.01


def _is_real(value: object) -> bool:
    """A real number (Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_size(size: int, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(size).__name__}")
    if not 1 <= size <= MAX_KERNEL or size % 2 == 0:
        raise ValueError(f"{name}: expected an odd int in 1..{MAX_KERNEL} (a kernel needs a "
                         f"centre pixel), got {size}")
    return int(size)


def gaussian_kernel(size: int, std: float) -> Tensor:
    """An isotropic Gaussian blur kernel, ``size`` x ``size`` (odd), summing to 1 (float64).

    >>> gaussian_kernel(13, 2.0).sum().item()
    1.0
    """
    size = _check_size(size)
    if not _is_real(std) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"std: expected a positive number, got {std!r}")
    # (r / std)^2, not r^2 / std^2: std^2 under- or overflows for stds far from 1 (a tiny std
    # gives the identity kernel, a huge one the box it tends to)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (r / float(std)) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def motion_kernel(size: int, intensity: float = 0.5,
                  generator: torch.Generator | None = None) -> Tensor:
    """A random camera-shake kernel, ``size`` x ``size`` (odd), non-negative, summing to 1.

    A trajectory in the spirit of Boracchi & Foi (2012), as DPS and DiffPIR draw their motion
    blur: a point moves with a velocity that is pulled back towards the start, jittered by
    Gaussian noise and, now and then, jerked by a large shake; ``intensity`` in [0, 1] scales the
    jitter and the frequency of the shakes (0: a straight line).  The path is scaled to span the
    kernel, centred on its centroid and splatted bilinearly.  Deterministic under ``generator``.
    """
    size = _check_size(size)
    if not _is_real(intensity) or not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity: expected a number in [0, 1], got {intensity!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=g, dtype=torch.float64)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64)

    steps = 200
    angle = 2 * math.pi * float(rand(1))
    v = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    x = torch.zeros(2, dtype=torch.float64)
    centripetal, jitter = 0.7 * float(rand(1)), 10.0 * float(intensity) * float(rand(1))
    shake_rate = 0.2 * float(intensity) * float(rand(1))
    path = [x.clone()]
    for _ in range(steps - 1):
        dv = jitter * randn(2) / steps - centripetal * x / steps
        if float(rand(1)) < shake_rate:
            dv = dv + 2 * v.norm() * randn(2)
        v = v + dv
        v = v / v.norm().clamp_min(1e-12)
        x = x + v / steps * size
        path.append(x.clone())
    pts = torch.stack(path)
    pts = pts - pts.mean(0)
    extent = float(pts.abs().max())
    half = (size - 1) / 2
    if extent > 0:
        pts = pts * min(1.0, half / extent)
    pts = pts + half
    k = torch.zeros(size, size, dtype=torch.float64)
    base = pts.floor().clamp(0, size - 1)
    frac = pts - base
    for dy in (0, 1):
        for dx in (0, 1):
            w = ((frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1]))
            r = (base[:, 0] + dy).clamp(max=size - 1).long()
            c = (base[:, 1] + dx).clamp(max=size - 1).long()
            k.index_put_((r, c), w, accumulate=True)
    return k / k.sum()


def parse_blur(spec: str, generator: torch.Generator | None = None) -> Tensor:
    """A kernel from a short spec: ``"gaussian:STD"`` (size ``2 * ceil(3 STD) + 1``, e.g. 13
    for std 2) or ``"motion:SIZE"`` (intensity 0.5), as ``restore --blur`` takes it."""
    kind, _, value = str(spec).partition(":")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"blur: expected 'gaussian:STD' or 'motion:SIZE', got {spec!r}"
                         ) from None
    if kind == "gaussian":
        limit = (MAX_KERNEL - 1) / 6  # the kernel spans +-3 std
        if not math.isfinite(number) or not 0 < number <= limit:
            raise ValueError(f"blur: the Gaussian std must be in (0, {limit:.1f}], got {spec!r}")
        return gaussian_kernel(2 * math.ceil(3 * number) + 1, number)
    if kind == "motion":
        if not number.is_integer() or number % 2 == 0 or not 1 <= number <= MAX_KERNEL:
            raise ValueError(f"blur: the motion kernel size must be an odd integer in "
                             f"1..{MAX_KERNEL}, got {spec!r}")
        return motion_kernel(int(number), 0.5, generator)
    raise ValueError(f"blur: expected 'gaussian:STD' or 'motion:SIZE', got {spec!r}")


def _work(x: Tensor) -> torch.dtype:
    """The FFT's dtype for ``x``: float64 stays, everything else runs in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_kernel(kernel: object) -> Tensor:
    if isinstance(kernel, np.ndarray):
        if kernel.dtype.kind not in "biuf":
            raise TypeError(f"kernel: expected an array of real numbers, got dtype "
                            f"{kernel.dtype}")
        kernel = torch.from_numpy(np.asarray(kernel, dtype=np.float64))
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel: expected a 2D tensor or array, got {type(kernel).__name__}")
    if kernel.is_complex():
        raise TypeError(f"kernel: expected real numbers, got dtype {kernel.dtype}")
    if kernel.dim() != 2:
        raise ValueError(f"kernel: expected a 2D (height, width) kernel, got shape "
                         f"{tuple(kernel.shape)}")
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel: expected odd height and width (a centre pixel), got {kh}x{kw};"
                         " pad it with a row/column of zeros")
    if max(kh, kw) > MAX_KERNEL:
        raise ValueError(f"kernel: {kh}x{kw} is larger than {MAX_KERNEL}x{MAX_KERNEL}")
    kernel = kernel.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError("kernel: contains NaN or inf values")
    total, magnitude = float(kernel.sum()), float(kernel.abs().sum())
    if not magnitude > 0:
        raise ValueError("kernel: is all zeros")
    if total <= 0:
        raise ValueError(f"kernel: its entries sum to {total:.3g}; a blur kernel sums to 1")
    if total < MIN_KERNEL_SUM * magnitude:
        raise ValueError(f"kernel: its entries sum to {total:.3g} against a magnitude of "
                         f"{magnitude:.3g} (the sum of their absolute values); a blur kernel "
                         f"must sum to a clear non-zero value (at least {MIN_KERNEL_SUM:g} of "
                         "its magnitude) to be normalised to sum 1")
    return kernel / total


class Blur(Operator):
    """Blur by a 2D ``kernel`` per channel, with circular boundary: ``y = k * x + sigma n``.

    ``A x`` equals ``scipy.ndimage.convolve(x_c, kernel, mode="wrap")`` per channel (the kernel
    is centred on its middle pixel and flipped, a true convolution), computed in the Fourier
    domain as DiffPIR's and deepinv's FFT blur do.  The kernel (odd height and width, finite,
    summing to at least :data:`MIN_KERNEL_SUM` of the sum of its absolute values) is
    normalised to sum 1; it must not be larger than the image.

    ``pseudo_inverse`` is the Tikhonov-regularised (Wiener) inverse
    ``X = conj(K) Y / (|K|^2 + regularizer)``: ``regularizer`` (on ``|K|^2``, which is at most
    1) keeps the frequencies the kernel removes from exploding; default ``100 sigma^2``, at
    least 1e-4 (0.01 at sigma 0.01, where 0.005-0.01 scored best on CBSD432 crops for both
    benchmark kernels).  ``proximal`` is exact in closed form,
    ``X = (conj(K) Y + lam X0) / (|K|^2 + lam)``; with ``lam = 0`` (a hard constraint)
    frequencies with ``|K|^2 < 1e-6`` keep ``x0``'s.

    >>> op = Blur(gaussian_kernel(13, 2.0), sigma=0.01)
    >>> op(torch.rand(3, 32, 40)).shape
    torch.Size([3, 32, 40])
    """

    task = "deblur"
    classical_name = "Wiener"

    def __init__(self, kernel: Tensor | np.ndarray, sigma: float = 0.0, *,
                 regularizer: float | None = None) -> None:
        self.kernel = _check_kernel(kernel)
        self.noise_sigma = _check_sigma(sigma)
        if regularizer is None:
            regularizer = max(100 * self.noise_sigma**2, 1e-4)
        if isinstance(regularizer, bool) or not isinstance(regularizer, (int, float)) \
                or not math.isfinite(regularizer) or regularizer <= 0:
            raise ValueError(f"regularizer: expected a number > 0, got {regularizer!r}")
        self.regularizer = float(regularizer)
        self._cache: dict[tuple[torch.device, torch.dtype, int, int], Tensor] = {}

    def _spectrum(self, x: Tensor) -> Tensor:
        """The kernel's rfft2 on ``x``'s grid, centred at pixel (0, 0)."""
        h, w = x.shape[-2:]
        complex_dtype = torch.complex128 if _work(x) == torch.float64 else torch.complex64
        key = (x.device, complex_dtype, h, w)
        if key not in self._cache or not _usable(self._cache[key]):
            self.output_shape(x.shape)  # the kernel fits the image
            kh, kw = self.kernel.shape
            pad = torch.zeros(h, w, dtype=torch.float64)
            pad[:kh, :kw] = self.kernel
            pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._cache[key] = torch.fft.rfft2(pad).to(x.device, complex_dtype)
        return self._cache[key]

    def _filter(self, x: Tensor, spectrum: Tensor) -> Tensor:
        out = torch.fft.irfft2(torch.fft.rfft2(x.to(_work(x))) * spectrum, s=x.shape[-2:])
        return out.to(x.dtype)

    def _forward(self, x: Tensor) -> Tensor:
        return self._filter(x, self._spectrum(x))

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._filter(y, self._spectrum(y).conj())

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        k = self._spectrum(x0)
        power = k.real**2 + k.imag**2
        work = _work(x0)
        lam = lam.to(work)
        x0_f = torch.fft.rfft2(x0.to(work))
        num = k.conj() * torch.fft.rfft2(y.expand_as(x0).to(work)) + lam * x0_f
        den = power + lam
        # lam = 0 (a hard constraint) at a frequency the kernel removes, or all but removes
        # (|K|^2 < 1e-6: dividing by it would blow rounding up a million times): keep x0's
        tiny = torch.finfo(work).tiny
        keep = (den <= tiny) | ((lam <= 0) & (power < 1e-6))
        out = torch.where(keep, x0_f, num / den.clamp_min(tiny))
        return torch.fft.irfft2(out, s=x0.shape[-2:]).to(x0.dtype)

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """The Wiener/Tikhonov inverse ``conj(K) Y / (|K|^2 + regularizer)``."""
        y4, squeeze = _as4d(y, "y")
        k = self._spectrum(y4)
        power = k.real**2 + k.imag**2
        x = self._filter(y4, k.conj() / (power + self.regularizer))
        return x.squeeze(0) if squeeze else x

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        *_, h, w = input_shape
        kh, kw = self.kernel.shape
        if kh > h or kw > w:
            raise ValueError(f"x: image {h}x{w} is smaller than the {kh}x{kw} blur kernel")
        return tuple(input_shape)

    def classical(self, y: Tensor) -> Tensor:
        return wiener(y, self)

    def classical_t0(self, num_train_timesteps: int = 1000) -> int:
        return scaled_t0(CLASSICAL_T0["blur"], num_train_timesteps)

    def dip_stage(self) -> dict[str, object]:
        # deblurring's noise (0.01 on [0, 1] in the benchmarks) is too weak for the prior's
        # reference to stop DIP by: the fixed budget, as for noise-free tasks
        return {"iterations": DIP_BUDGET}

    def __repr__(self) -> str:
        kh, kw = self.kernel.shape
        return f"Blur(kernel={kh}x{kw}, noise_sigma={self.noise_sigma:g})"


# -------------------------------------------------------------- its classical restoration

#: ``skimage.restoration.wiener``'s balance, tuned on 6 held-out CBSD432 crops (noise 0.01):
#: best 0.003 for Gaussian blur std 2 (22.92 dB; 0.002: 22.89), 0.002 for motion blur size 15
#: (26.65 dB); unsupervised Wiener, Richardson-Lucy and Tikhonov scored lower
#: (docs/results/deblur/tuning/peer.jsonl)
WIENER_BALANCE = 0.002


def wiener(observation: torch.Tensor, operator: Blur, balance: float = WIENER_BALANCE
           ) -> torch.Tensor:
    """Deblur with ``skimage.restoration.wiener`` (Laplacian regulariser, circular boundary as
    :class:`~dipprior.operators.Blur`), per channel, not clamped.

    >>> from dipprior.operators import Blur, gaussian_kernel
    >>> wiener(torch.full((3, 16, 16), 0.5), Blur(gaussian_kernel(3, 1.0))).shape
    torch.Size([3, 16, 16])
    """
    from skimage.restoration import wiener as skimage_wiener

    y = _check_classical(observation, operator, Blur, "Wiener deconvolution")
    operator.forward(y)  # checks the image against the kernel
    psf = operator.kernel.numpy()
    out = np.stack([skimage_wiener(c, psf, balance, clip=False)
                    for c in y.detach().cpu().double().numpy()])
    return torch.from_numpy(out).to(y.device, torch.float32)


# ----------------------------------------------------------------------------- its task

def _make_deblur(*, real: bool, blur: str, kernel: str | None, blur_sigma: float
                 ) -> Blur | OperatorFactory:
    sigma = noise_level(blur_sigma, "blur_sigma")
    if kernel is not None:
        from dipprior.io import load_kernel

        try:
            return Blur(load_kernel(kernel), sigma)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
    parse_blur(blur)  # checked now, not per image
    if blur.startswith("motion"):  # a fresh camera shake per image, drawn from its seed
        def factory(image: Tensor, generator: torch.Generator) -> Blur:
            return Blur(parse_blur(blur, generator), sigma)

        return factory
    return Blur(parse_blur(blur), sigma)


register(Task(
    "deblur", "deblurring", _make_deblur,
    (Param("blur", str, DEBLUR_BLUR, "the kernel, gaussian:STD (size 2*ceil(3 STD)+1) or "
           "motion:SIZE (a random camera shake drawn from the seed)"),
     Param("kernel", str, None, "the kernel from a file (a 2D .npy array or a grey image; odd "
           "sizes; normalised to sum 1), instead of blur"),
     Param("blur_sigma", float, DEBLUR_SIGMA, "noise std, 0..255 units; for a real image "
           "estimated from it when not given", option="--sigma", estimate=True)),
    label=lambda p: p["kernel"] or p["blur"],
    heading=lambda p: f"deblurring, {p['kernel'] or p['blur']} blur, noise "
                      f"{p['blur_sigma']:g}/255"))
