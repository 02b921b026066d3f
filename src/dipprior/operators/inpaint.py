"""Inpainting: ``Inpaint`` and the masks it takes."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from dipprior.operators.base import (
    CLASSICAL_T0,
    Operator,
    Tensor,
    _check_classical,
    _check_sigma,
    _usable,
    scaled_t0,
)
from dipprior.operators.registry import OperatorFactory, Param, Task, register

# Bounds on the sizes the mask helpers are asked for: 2**28 entries is a 16384 x 16384 mask
# (1 GiB of float32); a typo beyond that would allocate until the machine gives up.
MAX_MASK_ENTRIES = 2**28
MAX_BOXES = 10_000

# ----------------------------------------------------------------------------- inpainting


def _mask_tensor(mask: Tensor | np.ndarray) -> Tensor:
    if isinstance(mask, (str, os.PathLike)):
        raise TypeError(f"mask: expected a tensor or array of 0/1, got the path {str(mask)!r}; "
                        "read a mask image with mask_from_image(path) (white = known)")
    if not isinstance(mask, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"mask: expected a tensor or array of 0/1, got {type(mask).__name__}")
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


class Masked(Operator):
    """``y = M * (x + sigma n)`` with a 0/1 mask ``M`` per pixel and channel: the algebra of
    every masking operator (holes, colour filter arrays); a subclass gives the mask (``_m``)."""

    def _m(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _forward(self, x: Tensor) -> Tensor:
        return x * self._m(x)

    _adjoint = _forward

    def _mask_observation(self, y: Tensor) -> Tensor:
        return y * self._m(y)

    def _prox(self, x0: Tensor, y: Tensor, lam: Tensor) -> Tensor:
        # (M + lam) x = M y + lam x0 with M in {0, 1}; the unknown pixels keep x0, also at lam = 0.
        return x0 + self._m(x0) * (y - x0) / (1.0 + lam)


class Inpaint(Masked):
    """Missing pixels: ``y = M * (x + sigma n)`` with a binary mask ``M`` (1 = known pixel).

    ``mask`` is (H, W), (1, H, W) (same for all channels) or (3, H, W). Unknown pixels of the
    observation are 0. See :func:`random_pixel_mask`, :func:`random_box_mask`,
    :func:`mask_from_image`.
    """

    task = "inpaint"
    classical_name = "Biharmonic"

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
        if m is None or not _usable(m):
            m = self.mask.to(device=x.device, dtype=x.dtype)
            self._cache[key] = m = m if _usable(m) else m.clone()
        return m

    def classical(self, y: Tensor) -> Tensor:
        return biharmonic(y, self)

    def classical_t0(self, num_train_timesteps: int = 1000) -> int:
        return holes_t0(self.mask, num_train_timesteps)

    def holes(self) -> Tensor | None:
        if self.noise_sigma > 0:  # every known pixel needs the model too
            return None
        return (self.mask == 0).any(dim=0)

    def crop(self, top: int, left: int, height: int, width: int) -> Inpaint:
        mask = self.mask[..., top:top + height, left:left + width]
        if not bool(mask.any()):
            raise ValueError(f"operator: the tile at ({top}, {left}) has no known pixel (a hole "
                             f"larger than the {height}x{width} tiles); use larger tiles")
        return Inpaint(mask, self.noise_sigma)

    def __repr__(self) -> str:
        return (f"Inpaint(mask={tuple(self.mask.shape)}, known={self.known_fraction:.3f}, "
                f"noise_sigma={self.noise_sigma:g})")


def _spatial_shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: expected (H, W) or (C, H, W) with positive sizes, got {shape}")
    if math.prod(shape) > MAX_MASK_ENTRIES:
        raise ValueError(f"{name}: {shape} has {math.prod(shape)} entries, more than the "
                         f"{MAX_MASK_ENTRIES} (2**28) a mask may have")
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
    if isinstance(boxes, bool) or not isinstance(boxes, (int, np.integer)):
        raise TypeError(f"boxes: expected an int, got {type(boxes).__name__}")
    if not 0 <= boxes <= MAX_BOXES:
        raise ValueError(f"boxes: expected an int in 0..{MAX_BOXES}, got {boxes}")
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


def center_box_mask(shape: Sequence[int], box: int = 32) -> Tensor:
    """A mask of ones with one centred ``box`` x ``box`` hole (zeros) through all channels.

    >>> center_box_mask((6, 6), 2)[2:4, 2:4].sum().item(), center_box_mask((6, 6), 2).sum().item()
    (0.0, 32.0)
    """
    shape = _spatial_shape(shape)
    h, w = shape[-2:]
    if isinstance(box, bool) or not isinstance(box, (int, np.integer)) or not 1 <= box <= min(h, w):
        raise ValueError(f"box: expected an int in 1..{min(h, w)} (the image side), got {box!r}")
    top, left = (h - box) // 2, (w - box) // 2
    mask = torch.ones(shape)
    mask[..., top:top + box, left:left + box] = 0.0
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


# -------------------------------------------------------------- its classical restoration

def biharmonic(observation: torch.Tensor, operator: Inpaint) -> torch.Tensor:
    """Fill the unknown pixels of an inpainting observation with
    ``skimage.restoration.inpaint_biharmonic`` (known pixels are kept as observed).

    >>> from dipprior.operators import Inpaint
    >>> op = Inpaint(torch.tensor([[1.0, 0.0, 1.0]]))
    >>> biharmonic(torch.tensor([[[0.2, 0.0, 0.4]]] * 3), op)[0]
    tensor([[0.2000, 0.3000, 0.4000]])
    """
    from skimage.restoration import inpaint_biharmonic

    y = _check_classical(observation, operator, Inpaint, "biharmonic inpainting")
    operator.forward(y)  # checks that the mask matches
    image = y.detach().cpu().double().numpy()
    missing = (operator.mask.cpu().numpy() == 0)
    missing = np.broadcast_to(missing, image.shape).copy()
    if missing.all():
        raise ValueError("operator: its mask keeps no pixel; biharmonic inpainting needs known "
                         "pixels to fill the holes from")
    out = np.empty_like(image)
    if all((missing[c] == missing[0]).all() for c in range(1, image.shape[0])):
        out[:] = inpaint_biharmonic(np.moveaxis(image, 0, -1).copy(), missing[0],
                                    channel_axis=-1).transpose(2, 0, 1)
    else:  # a mask per channel: one channel at a time
        for c in range(image.shape[0]):
            out[c] = inpaint_biharmonic(image[c], missing[c])
    return torch.from_numpy(out).to(y.device, torch.float32)


def hole_scale(mask: torch.Tensor) -> float:
    """The mean distance (pixels) from a missing pixel to the nearest known one, over all
    missing pixels of a (C, H, W) or (H, W) mask (1 = known); 0 without holes.

    It tells scattered missing pixels (about 1) from a large hole (a 32x32 box: 5.8), whose
    interpolated middle is far less certain.
    """
    from scipy.ndimage import distance_transform_edt

    m = mask.detach().cpu().reshape(-1, *mask.shape[-2:]).numpy()
    missing = m == 0
    if not missing.any():
        return 0.0
    distances = [distance_transform_edt(c)[c] for c in missing if c.any()]
    total = sum(float(d.sum()) for d in distances)
    return total / sum(d.size for d in distances)


def holes_t0(mask: torch.Tensor, num_train_timesteps: int = 1000) -> int:
    """The classical start's ``t0`` for holes: it grows with :func:`hole_scale`, linear in its
    logarithm between the two tuned anchors of :data:`CLASSICAL_T0` and constant beyond them."""
    (d0, t_small), (d1, t_large) = CLASSICAL_T0["holes"]
    d = min(max(hole_scale(mask), d0), d1)
    return scaled_t0(t_small + (t_large - t_small) * math.log(d / d0) / math.log(d1 / d0),
                     num_train_timesteps)

# ----------------------------------------------------------------------------- its tasks

def _make_inpaint(*, real: bool, keep: float, mask: str | None) -> Inpaint | OperatorFactory:
    if mask is not None:
        return Inpaint(mask_from_image(mask))
    if real:
        raise ValueError("mask: a mask image (white = known pixel) is required to inpaint a "
                         "real image (or simulate: drop random pixels of a clean one)")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(f"keep: expected a fraction in (0, 1], got {keep}")

    def factory(image: Tensor, generator: torch.Generator) -> Inpaint:
        return Inpaint(random_pixel_mask(image.shape[-2:], keep, generator))

    return factory


def _make_box(*, real: bool, box: int) -> OperatorFactory:
    if real:
        raise ValueError(f"box: the task cuts a centred {box}x{box} hole into a clean image "
                         "(simulate); to fill the holes of a real image use the inpaint task "
                         "with a mask image")
    if isinstance(box, bool) or not isinstance(box, int) or box < 1:
        raise ValueError(f"box: expected a side >= 1 (pixels), got {box!r}")

    def factory(image: Tensor, generator: torch.Generator) -> Inpaint:
        return Inpaint(center_box_mask(image.shape[-2:], box))

    return factory


register(Task(
    "inpaint", "inpainting (missing pixels)", _make_inpaint,
    (Param("keep", float, 0.5, "simulated holes: the fraction of pixels kept (at random)"),
     Param("mask", str, None, "the mask image of a real observation, white = known pixel")),
    label=lambda p: "mask" if p["mask"] else f"{100 * (1 - p['keep']):g}% missing",
    heading=lambda p: "inpainting, " + (f"mask {p['mask']}" if p["mask"] else
                                        f"{100 * (1 - p['keep']):g}% of pixels missing")))
register(Task(
    "box", "inpainting (a centred box)", _make_box,
    (Param("box", int, 32, "side of the centred hole (pixels)"),),
    label=lambda p: f"{p['box']}px box",
    heading=lambda p: f"inpainting, a centred {p['box']}x{p['box']} hole"))
