"""Random patches from a folder of images, for training the prior (no torchvision needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["PatchDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _read_rgb_uint8(path: Path) -> np.ndarray:
    """An (H, W, 3) uint8 array; grey is repeated, alpha dropped, 16-bit scaled down."""
    from skimage import io as skio

    img = np.asarray(skio.imread(path))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"{path}: expected a grey, RGB or RGBA image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        if img.dtype.kind == "f":
            img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        else:
            raise ValueError(f"{path}: unsupported pixel type {img.dtype}")
    return np.ascontiguousarray(img)


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

    Example:
        >>> ds = PatchDataset("images/", patch_size=64)  # doctest: +SKIP
        >>> ds.sample_batch(8, torch.Generator().manual_seed(0)).shape  # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """

    def __init__(self, folder: str | os.PathLike, patch_size: int, *, flip: bool = True,
                 cache: bool = True) -> None:
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
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

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
        p = self.patch_size
        h, w = img.shape[:2]
        r = torch.randint(0, 2**62, (4,), generator=generator).tolist()
        top, left = r[0] % (h - p + 1), r[1] % (w - p + 1)
        crop = img[top:top + p, left:left + p]
        if self.flip and r[2] % 2:
            crop = crop[:, ::-1]
        if self.flip and r[3] % 2:
            crop = crop[::-1]
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patch(index)

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None,
                     indices: list[int] | None = None) -> torch.Tensor:
        """``batch_size`` patches of images drawn uniformly (from ``indices``, default all)."""
        pool = list(range(len(self))) if indices is None else indices
        picks = torch.randint(0, len(pool), (batch_size,), generator=generator).tolist()
        return torch.stack([self.patch(pool[i], generator) for i in picks])
