"""Inputs of the experiments: images, named tasks, and the seeded degradation of image ``i``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from dipprior.io import IMAGE_SUFFIXES, center_crop, load_image
from dipprior.operators import (
    DEBLUR_BLUR,
    DEBLUR_SIGMA,
    Blur,
    Denoise,
    Inpaint,
    Operator,
    SuperResolution,
    center_box_mask,
    parse_blur,
    random_pixel_mask,
)

__all__ = ["Images", "OperatorFactory", "TASKS", "check_levels", "degrade", "load_folder",
           "make_task", "prepare_images"]

OperatorFactory = Callable[[torch.Tensor, torch.Generator], Operator]
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
                size: int | None = None) -> dict[str, torch.Tensor]:
    """The first ``n_images`` images of ``folder`` in sorted file-name order, center-cropped to
    ``size`` x ``size`` (None: whole images) -> ``{stem: (3, H, W) tensor}``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {str(folder)!r} is not a directory")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
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


TASKS = ("denoise", "inpaint", "box", "sr", "deblur")


def check_levels(*, sigma: float = 0.0, keep: float = 1.0, blur_sigma: float = 0.0) -> None:
    """Refuse, in the user's units, noise stds ``sigma``/``blur_sigma`` outside 0..255 and a
    ``keep`` fraction outside (0, 1] (as :func:`make_task` and the demo take them)."""
    for name, value, low, high in (("sigma", sigma, 0, 255), ("blur_sigma", blur_sigma, 0, 255),
                                   ("keep", keep, 0, 1)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low <= value <= high \
                or (name == "keep" and value == 0):
            what = ("a fraction in (0, 1]" if name == "keep"
                    else "a noise std in 0..255 (8-bit pixel units)")
            raise ValueError(f"{name}: expected {what}, got {value:g}" if number
                             else f"{name}: expected {what}, got {value!r}")


def make_task(task: str, *, sigma: float = 25.0, keep: float = 0.5, factor: int = 4,
              kernel: str = "bicubic", box: int = 32, blur: str = DEBLUR_BLUR,
              blur_sigma: float = DEBLUR_SIGMA) -> Operator | OperatorFactory:
    """The degradation of a named task for :func:`compare` and friends.

    ``"denoise"``: :class:`~dipprior.operators.Denoise` with ``sigma`` in 0..255 units;
    ``"inpaint"``: a factory drawing a fresh random pixel mask keeping the fraction ``keep`` per
    image (noise-free observation); ``"box"``: a centred ``box`` x ``box`` hole (noise-free);
    ``"sr"``: :class:`~dipprior.operators.SuperResolution` by ``factor`` (noise-free);
    ``"deblur"``: :class:`~dipprior.operators.Blur` by ``blur`` (``"gaussian:STD"``, a fixed
    kernel, or ``"motion:SIZE"``, a fresh camera-shake kernel per image) with noise of
    ``blur_sigma`` in 0..255 units (2.55 = 0.01 on [0, 1], the deblurring benchmarks' level).
    """
    check_levels(sigma=sigma, keep=keep, blur_sigma=blur_sigma)
    if task == "denoise":
        return Denoise(sigma / 255.0)
    if task == "inpaint":

        def factory(image: torch.Tensor, generator: torch.Generator) -> Operator:
            return Inpaint(random_pixel_mask(image.shape[-2:], keep, generator))

        return factory
    if task == "box":
        def box_factory(image: torch.Tensor, generator: torch.Generator) -> Operator:
            return Inpaint(center_box_mask(image.shape[-2:], box))

        return box_factory
    if task == "sr":
        return SuperResolution(factor, kernel)
    if task == "deblur":
        parse_blur(blur)  # checked now, not per image
        if blur.startswith("motion"):
            def blur_factory(image: torch.Tensor, generator: torch.Generator) -> Operator:
                return Blur(parse_blur(blur, generator), blur_sigma / 255.0)

            return blur_factory
        return Blur(parse_blur(blur), blur_sigma / 255.0)
    raise ValueError(f"task: expected one of {TASKS}, got {task!r}")


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
