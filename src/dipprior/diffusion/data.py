"""Random patches from a folder of images, for training the prior (no torchvision needed)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dipprior.io import IMAGE_SUFFIXES, load_image

__all__ = ["PatchDataset", "Augmentation", "IMAGE_SUFFIXES"]


def _read_rgb_uint8(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 array (read by :func:`dipprior.io.load_image`; 16-bit rounded to 8)."""
    image = load_image(path).permute(1, 2, 0).numpy()
    return np.ascontiguousarray((image * 255.0).round().astype(np.uint8))


@dataclass(frozen=True)
class Augmentation:
    """Random changes applied to each training patch, on top of the flips.

    Attributes:
        rotate: random multiples of 90 degrees.
        scale: ``(low, high)``: the patch is cut at ``P * s`` pixels and resized to ``P``, ``s``
            log-uniform in the range (anti-aliased bilinear); ``(1, 1)`` is off.  Zooming out
            shows the prior finer texture per pixel, zooming in smoother surfaces.
        saturation: saturation scaled by ``1 + u``, ``u ~ Uniform[-saturation, saturation]``
            (mixing each pixel with its grey value, clamped to [0, 1]).
        brightness: values scaled by ``1 + u``, ``u ~ Uniform[-brightness, brightness]``.

    ``Augmentation()`` changes nothing and draws nothing, so older runs resume bitwise.
    """

    rotate: bool = False
    scale: tuple[float, float] = (1.0, 1.0)
    saturation: float = 0.0
    brightness: float = 0.0

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.scale)
        if not (0.25 <= low <= high <= 4.0):
            raise ValueError(f"scale must be (low, high) with 0.25 <= low <= high <= 4, "
                             f"got {self.scale!r}")
        object.__setattr__(self, "scale", (low, high))
        for name in ("saturation", "brightness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")

    @property
    def rescales(self) -> bool:
        return self.scale != (1.0, 1.0)

    @property
    def jitters(self) -> bool:
        return self.saturation > 0 or self.brightness > 0

    def to_config(self) -> dict[str, Any]:
        return {**asdict(self), "scale": list(self.scale)}


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


class PatchDataset(torch.utils.data.Dataset):
    """Random ``patch_size`` crops (with random horizontal/vertical flips) from a folder of images.

    ``dataset[i]`` is a random patch of image ``i`` (global torch RNG); training uses
    :meth:`sample_batch`, which draws images, crops and flips from a given generator, so runs are
    reproducible and resumable.  Patches are float32 (3, P, P) tensors in [0, 1].  Decoded images
    are kept in memory as uint8 (``cache=True``) since decoding dominates otherwise.

    Args:
        folder: directory searched (non-recursively) for PNG/JPEG/BMP/TIFF files.
        patch_size: crop side; images smaller than it are rejected.
        flip: random horizontal and vertical flips.
        cache: keep decoded images in memory.
        augment: further random changes (:class:`Augmentation`); the default changes nothing.

    Example:
        >>> ds = PatchDataset("images/", patch_size=64)  # doctest: +SKIP
        >>> ds.sample_batch(8, torch.Generator().manual_seed(0)).shape  # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """

    def __init__(self, folder: str | os.PathLike, patch_size: int, *, flip: bool = True,
                 cache: bool = True, augment: Augmentation | None = None) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"folder {folder} is not a directory")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.files = sorted(p for p in folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise ValueError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.patch_size = patch_size
        self.flip = flip
        self.cache = cache
        if augment is not None and not isinstance(augment, Augmentation):
            raise TypeError(f"augment must be an Augmentation, got {type(augment).__name__}")
        self.augment = augment or Augmentation()
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def check(self) -> None:
        """Decode every image now (kept when ``cache``), so that a corrupt or too small file
        fails before training starts, naming the file."""
        for index in range(len(self)):
            self.image(index)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as an (H, W, 3) uint8 array."""
        img = self._images.get(index)
        if img is None:
            img = _read_rgb_uint8(self.files[index])
            h, w = img.shape[:2]
            if min(h, w) < self.patch_size:
                raise ValueError(f"{self.files[index]} ({h}x{w}) is smaller than "
                                 f"patch_size={self.patch_size}")
            if self.cache:
                self._images[index] = img
        return img

    def patch(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random (3, P, P) float patch of image ``index``."""
        img = self.image(index)
        aug = self.augment
        p = self.patch_size
        h, w = img.shape[:2]
        side = p
        if aug.rescales:  # cut side = p * s pixels (at most the image), resize to p below
            low, high = math.log(aug.scale[0]), math.log(aug.scale[1])
            s = math.exp(low + (high - low) * _uniform(generator))
            side = max(1, min(round(p * s), h, w))
        r = torch.randint(0, 2**62, (4,), generator=generator).tolist()
        top, left = r[0] % (h - side + 1), r[1] % (w - side + 1)
        crop = img[top:top + side, left:left + side]
        if self.flip and r[2] % 2:
            crop = crop[:, ::-1]
        if self.flip and r[3] % 2:
            crop = crop[::-1]
        out = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0
        if side != p:
            out = F.interpolate(out[None], size=(p, p), mode="bilinear", align_corners=False,
                                antialias=side > p)[0].clamp_(0, 1)
        if aug.rotate:
            out = torch.rot90(out, int(torch.randint(0, 4, (), generator=generator)), (1, 2))
        if aug.jitters:
            sat = 1 + aug.saturation * (2 * _uniform(generator) - 1)
            bright = 1 + aug.brightness * (2 * _uniform(generator) - 1)
            grey = out.mean(0, keepdim=True)
            out = ((grey + sat * (out - grey)) * bright).clamp_(0, 1)
        return out.contiguous()

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patch(index)

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None,
                     indices: list[int] | None = None) -> torch.Tensor:
        """``batch_size`` patches of images drawn uniformly (from ``indices``, default all)."""
        pool = list(range(len(self))) if indices is None else indices
        picks = torch.randint(0, len(pool), (batch_size,), generator=generator).tolist()
        return torch.stack([self.patch(pool[i], generator) for i in picks])
