"""Inputs of the experiments: images, named tasks, and the seeded degradation of image ``i``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dipprior.io import IMAGE_SUFFIXES, center_crop, load_image
from dipprior.operators import Operator
from dipprior.operators.registry import OperatorFactory

__all__ = ["Images", "degrade", "load_folder", "prepare_images"]

Images = Mapping[str, torch.Tensor] | Sequence[torch.Tensor]


def prepare_images(images: Images) -> list[tuple[str, torch.Tensor]]:
    """A dict name -> image or a list of images -> ``[(name, image)]`` (checked, (3, H, W))."""
    if isinstance(images, Mapping):
        items = [(str(k), v) for k, v in images.items()]
    elif isinstance(images, Sequence) and not isinstance(images, (str, torch.Tensor)):
        items = [(f"image_{i}", v) for i, v in enumerate(images)]
    else:
        raise TypeError(f"images: expected a dict name -> tensor or a list of tensors, got "
                        f"{type(images).__name__}")
    if not items:
        raise ValueError("images: empty")
    out = []
    for name, img in items:
        if not isinstance(img, torch.Tensor) or not img.is_floating_point():
            raise TypeError(f"images: {name!r} is not a float tensor")
        if img.dim() == 4 and img.shape[0] == 1:
            img = img[0]
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images: {name!r} has shape {tuple(img.shape)}, expected (3, H, W)")
        if not bool(torch.isfinite(img).all()) or float(img.min()) < 0 or float(img.max()) > 1:
            raise ValueError(f"images: {name!r} must be finite with values in [0, 1]")
        out.append((name, img.float()))
    return out


def load_folder(folder: str | os.PathLike, n_images: int | None = None,
                size: int | None = None, held_out: bool = False) -> dict[str, torch.Tensor]:
    """The first ``n_images`` images of ``folder`` in sorted file-name order, center-cropped to
    ``size`` x ``size`` (None: whole images) -> ``{stem: (3, H, W) tensor}``.  ``held_out``:
    only every 27th image from the 14th, the CBSD432 photos the shipped prior never trained on
    (its settings were tuned on them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {str(folder)!r} is not a directory")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if held_out:
        paths = paths[13::27]
    if n_images is not None:
        if n_images < 1:
            raise ValueError(f"n_images: expected a positive int, got {n_images}")
        paths = paths[:n_images]
    if not paths:
        raise ValueError(f"folder: no images in {str(folder)!r}")
    images = {}
    for p in paths:
        img = load_image(p)
        images[p.stem] = center_crop(img, size) if size is not None else img
    return images


def degrade(image: torch.Tensor, operator: Operator | OperatorFactory, seed: int
            ) -> tuple[Operator, torch.Tensor]:
    """The operator and observation of one image, all randomness from ``seed``.

    ``operator`` is an operator, or a factory ``(image, generator) -> operator`` (e.g. a fresh
    random mask); both the factory and the noise draw from ``Generator().manual_seed(seed)``.
    Experiments degrade image ``i`` with ``seed + i``.
    """
    generator = torch.Generator().manual_seed(seed)
    if hasattr(operator, "proximal"):  # operators are callable too: tell them apart
        op = operator
    elif callable(operator):
        op = operator(image, generator)
        if not hasattr(op, "proximal"):
            raise TypeError(f"operator: the factory returned {type(op).__name__}, "
                            f"not an operator")
    else:
        raise TypeError(f"operator: expected an operator or a factory (image, generator) -> "
                        f"operator, got {type(operator).__name__}")
    return op, op.degrade(image, generator)  # type: ignore[union-attr]
