"""The operator base class with its task contract, its validation, and ``Denoise``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from dipprior._tensor import randn
from dipprior.operators.cg import conjugate_gradient
from dipprior.operators.registry import Param, Task, noise_level, register

Tensor = torch.Tensor
Rho = float | Tensor

#: DIP iterations before the chain takes over on noise-free tasks (:meth:`Operator.dip_stage`)
DIP_BUDGET = 1000

#: ``t0`` of a classical start, tuned on held-out CBSD432 crops (T = 1000, 25 steps, zeta 1):
#: for holes at two hole scales (:func:`hole_scale`: 50% random pixels, a centred 32x32 box),
#: for blur (a Wiener start; Gaussian std 2 and motion size 15, noise 0.01) and for every
#: other operator (tuned on bicubic x4 super-resolution)
CLASSICAL_T0 = {"holes": ((1.03, 100), (5.84, 200)), "blur": 200, "other": 100}


# ----------------------------------------------------------------------------- validation


def check_image(x: Tensor, name: str, *, low: float = -0.5, high: float = 1.5) -> None:
    """Raise a clear error unless ``x`` is a finite float (C, H, W) or (N, C, H, W) tensor in range.

    ``low``/``high`` bound the values; the defaults accept [0, 1] images with room for noise but
    reject e.g. 0..255 images. This synchronises with the device, so it is not called per step.
    """
    _check_tensor(x, name)
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


def _check_tensor(x: Tensor, name: str) -> None:
    """The checks every operator input passes: a floating point (C, H, W) or (N, C, H, W) tensor.

    Integer and bool images are refused rather than computed on: a uint8 image would be
    downsampled and rounded in integer arithmetic (e.g. to all zeros) without a word.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor (an image in [0, 1]), got "
                        f"dtype {x.dtype}; convert it first, e.g. x.float() / 255 for a uint8 "
                        "image")
    if x.dim() not in (3, 4):
        raise ValueError(f"{name}: expected shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")


def _as4d(x: Tensor, name: str) -> tuple[Tensor, bool]:
    """Check ``x`` and make it (N, C, H, W); returns it and whether to squeeze the result."""
    _check_tensor(x, name)
    return (x.unsqueeze(0), True) if x.dim() == 3 else (x, False)


def _usable(t: Tensor) -> bool:
    """Whether a cached tensor may be used here: one made under ``torch.inference_mode`` cannot
    take part in autograd (e.g. a DIP fit) outside it."""
    return not t.is_inference() or torch.is_inference_mode_enabled()


def _rho4d(rho: Rho, like: Tensor) -> Tensor:
    """rho as a float or a per-image tensor of N values -> (N or 1, 1, 1, 1) on like's device."""
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    if r.dim() > 1 or (r.dim() == 1 and r.numel() not in (1, like.shape[0])):
        raise ValueError(f"rho: expected a number or {like.shape[0]} values, got {tuple(r.shape)}")
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("rho: must be finite and >= 0")
    return r.reshape(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- base class


class Operator:
    """A linear degradation ``y = A x + noise_sigma * n``, and what the library knows of its task.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint` on (N, C, H, W) tensors and, where
    a closed form exists, :meth:`_prox` (the solution of ``(A^T A + lam I) x = A^T y + lam x0``);
    an operator that changes the image size also implements :meth:`output_shape` and
    :meth:`input_shape`.  That is all a user's own operator needs: the rest of the task contract
    has defaults that serve any linear operator, and the built-in tasks override them --

    * :attr:`task`: the key of its tuned sampler settings (``pipeline.presets``);
    * :meth:`classical`: its classical restoration, the start of the default chain and the
      peer in tables (:attr:`classical_name`), deepinv's ``A_dagger`` in spirit;
    * :meth:`classical_t0`: where a chain from that restoration starts;
    * :meth:`dip_stage`: the DIP fit it gets when none is given;
    * :meth:`crop`: the operator of a window of the image, for tiles (None: it couples pixels
      across any cut); :meth:`holes`: pixels observed not at all, the rest exactly (restored in
      windows around them);
    * :attr:`identity`: ``A = I`` (with noise: Gaussian denoising, whose grey photos are
      whitened and whose adaptation loss is recorrupted-to-recorrupted);
    * :attr:`keeps_grey`: a grey observation restores to a grey image (not so for a colour
      filter array, whose grey raw image holds the colours).
    """

    noise_sigma: float = 0.0
    #: the key of the tuned settings (``pipeline.presets``): a new operator gets the noise-free
    #: settings tuned on holes, which need no knowledge of the operator
    task: str = "custom"
    #: the name of :meth:`classical` in tables
    classical_name: str = "Pseudo-inverse"
    #: ``A = I``: denoising (Gaussian when :attr:`noise_sigma` > 0)
    identity: bool = False
    #: a grey observation (identical channels) restores to a grey image
    keeps_grey: bool = True

    # -- the task contract
    @property
    def is_denoising(self) -> bool:
        """Gaussian denoising: ``A = I`` and a noise level > 0."""
        return self.identity and self.noise_sigma > 0

    def classical(self, y: Tensor) -> Tensor:
        """The classical restoration of one observation ``y`` (C, H, W) -> an image of
        :meth:`input_shape`; the default is the minimum-norm least-squares
        :meth:`pseudo_inverse`."""
        _check_one(y)
        return self.pseudo_inverse(y)

    def classical_t0(self, num_train_timesteps: int = 1000) -> int:
        """``t0="auto"`` of a chain from :meth:`classical` (or a caller's own start): tuned, not
        estimated, since a classical restoration's errors are smooth and a residual estimate
        barely sees them.  The default is the value tuned on bicubic x4 super-resolution (100
        of T = 1000), scaled to other ``T``."""
        return scaled_t0(CLASSICAL_T0["other"], num_train_timesteps)

    def dip_stage(self) -> dict[str, object]:
        """The :class:`~dipprior.dip.DIPConfig` fields of the DIP fit this task gets when none
        is given: a fixed 1000 iterations on noise-free tasks (the chain completes the image),
        up to 2000 stopped by the prior's reference restoration on noisy ones."""
        if self.noise_sigma > 0:
            return {"iterations": 2000, "early_stopping": "reference"}
        return {"iterations": DIP_BUDGET}

    def holes(self) -> Tensor | None:
        """(H, W) bool: the pixels this operator does not fully observe, where every other pixel
        is observed exactly -- a large image is then restored only in windows around them
        (``pipeline.windows``); None (the default) where the operator has no such holes."""
        return None

    def crop(self, top: int, left: int, height: int, width: int) -> Operator | None:
        """The operator of the window ``[top:top + height, left:left + width]`` of the image,
        so that the window restores on its own (tiles); None where ``A`` couples pixels across
        any cut (the default: a user's own operator is never tiled unless it says how)."""
        return None

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
            y = y + self.noise_sigma * randn(y.shape, generator, y.device, y.dtype)
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


def scaled_t0(t0: float, num_train_timesteps: int) -> int:
    """A ``t0`` tuned for T = 1000, scaled to another ``T`` (and kept below it)."""
    return min(round(t0 * num_train_timesteps / 1000), num_train_timesteps - 1)


def _check_classical(observation: Tensor, operator: Operator, kind: type, what: str) -> Tensor:
    """One observation (C, H, W) and an operator of ``kind`` for the classical restoration
    ``what`` (named in the error) -> the observation."""
    if not isinstance(operator, kind):
        raise TypeError(f"operator: {what} needs a {kind.__name__} operator, got "
                        f"{type(operator).__name__}")
    _check_one(observation)
    return observation


def _check_one(y: Tensor, name: str = "observation") -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 3:
        raise ValueError(f"{name}: expected one image (C, H, W), got shape {tuple(y.shape)}")


def classical_start(observation: torch.Tensor, operator: Operator) -> torch.Tensor:
    """The classical restoration of ``observation`` for ``operator``'s task
    (:meth:`~dipprior.operators.Operator.classical`): biharmonic for holes, bicubic for low
    resolution, Wiener deconvolution for blur, the observation itself for Gaussian denoising,
    and the pseudo-inverse for any other operator."""
    _check_one(observation)
    return operator.classical(observation)



def _check_sigma(sigma: float) -> float:
    if (isinstance(sigma, torch.Tensor) and sigma.numel() == 1) or (
            isinstance(sigma, (np.ndarray, np.generic)) and np.size(sigma) == 1):
        sigma = sigma.item()  # one number: torch.tensor(0.1), np.float32(0.1)
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

    task = "denoise"
    classical_name = "Observation"  # its peer in tables is CBM3D (dipprior.denoisers)
    identity = True

    def crop(self, top: int, left: int, height: int, width: int) -> Operator:
        return self

    def __init__(self, sigma: float) -> None:
        self.noise_sigma = _check_sigma(sigma)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        return x0 + (y - x0) / (1.0 + lam)


# ----------------------------------------------------------------------------- its task

register(Task(
    "denoise", "Gaussian denoising",
    lambda *, real, sigma: Denoise(noise_level(sigma, "sigma")),
    (Param("sigma", float, 25.0, "noise std, 0..255 units; for a real image estimated from it "
           "when not given", estimate=True),),
    label=lambda p: f"sigma {p['sigma']:g}",
    heading=lambda p: f"denoising sigma={p['sigma']:g}/255"))
