"""Restore a photo too large for one pass in overlapping tiles, blended without seams.

Each tile is restored on its own (with its own seed, from the image's seed) and the tiles are
blended with weights that ramp linearly from 0 to 1 across each overlap, so every output pixel
is a convex combination of the tiles that cover it and no tile border leaves a step.  This suits
operators that act pixel by pixel (denoising, inpainting); deblurring and super-resolution couple
pixels across a tile border and are refused.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from dipprior._seeds import stream_seed
from dipprior.operators import Operator

__all__ = ["TILE_SEEDS", "check_tiles", "restore_tiled", "tile_starts", "tile_weight"]

TILE_SEEDS = 0x1B873593  # tile k of an image: stream TILE_SEEDS + 2 k (odd)


def check_tiles(operator: Operator, h: int, w: int, tile: int, overlap: int
                ) -> dict[tuple[int, int], Operator]:
    """``{(y0, x0): the tile's operator}``; raises, before any work, if ``operator`` cannot be
    restored in these tiles."""
    th, tw = min(tile, h), min(tile, w)
    return {(y0, x0): _crop_operator(operator, y0, x0, th, tw)
            for y0 in tile_starts(h, tile, overlap) for x0 in tile_starts(w, tile, overlap)}


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``size`` with at least ``overlap``
    pixels shared by neighbours; the last tile ends at the border."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def tile_weight(tile_h: int, tile_w: int, overlap: int, top: bool, bottom: bool, left: bool,
                right: bool) -> torch.Tensor:
    """(tile_h, tile_w) blending weights: linear ramps over ``overlap`` pixels on the sides
    that have a neighbour (``top``...), 1 elsewhere."""
    def ramp(n: int, before: bool, after: bool) -> torch.Tensor:
        w = torch.ones(n)
        r = min(overlap, n // 2)
        if r > 0:
            up = (torch.arange(r, dtype=torch.float32) + 1) / (r + 1)
            if before:
                w[:r] = up
            if after:
                w[n - r:] = up.flip(0)
        return w

    return ramp(tile_h, top, bottom)[:, None] * ramp(tile_w, left, right)[None, :]


def _crop_operator(op: Operator, y0: int, x0: int, h: int, w: int) -> Operator:
    cropped = op.crop(y0, x0, h, w)
    if cropped is None:
        raise ValueError(f"operator: {type(op).__name__} couples pixels across tile borders "
                         "(its crop() is None): restore a smaller image, or crop it")
    return cropped


def restore_tiled(restore: Callable[..., object], observation: torch.Tensor, operator: Operator,
                  seed: int = 0, *, tile: int = 512, overlap: int = 32,
                  progress: bool = True) -> torch.Tensor:
    """``restore(y_tile, op_tile, seed=...)`` (e.g. a :class:`DIPInitializedSampler`) over
    overlapping ``tile`` x ``tile`` tiles of one (3, H, W) observation -> the blended image.

    Tile ``k`` (row-major) is seeded ``stream_seed(seed, TILE_SEEDS + 2 k)``.  An image no larger
    than a tile is restored in one call with ``seed`` itself (the untiled result).  Noise-free
    inpainting: a tile without a missing pixel is copied (``restore`` never sees it) and every
    known pixel comes back exactly as observed (:mod:`dipprior.pipeline.windows` restores only
    windows around the holes, cheaper still).
    """
    if observation.dim() != 3:
        raise ValueError(f"observation: expected one image (3, H, W), got shape "
                         f"{tuple(observation.shape)}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16:
        raise ValueError(f"tile: expected an int >= 16, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile // 2:
        raise ValueError(f"overlap: expected an int in [0, tile / 2), got {overlap!r}")
    h, w = observation.shape[-2:]
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(rows) == len(cols) == 1:
        return _image(restore(observation, operator, seed=seed))
    tile_ops = check_tiles(operator, h, w, tile, overlap)
    noise_free_holes = operator.holes() is not None
    th, tw = min(tile, h), min(tile, w)
    out = torch.zeros(observation.shape, dtype=torch.float32)
    total = torch.zeros(h, w)
    bar = tqdm(total=len(rows) * len(cols), desc="tiles", unit="tile", disable=not progress)
    for i, y0 in enumerate(rows):
        for j, x0 in enumerate(cols):
            k = i * len(cols) + j
            y_tile = observation[:, y0:y0 + th, x0:x0 + tw]
            if noise_free_holes and not bool(tile_ops[y0, x0].holes().any()):
                image = y_tile  # nothing missing: copied, no model call
            else:
                image = _image(restore(y_tile, tile_ops[y0, x0],
                                       seed=stream_seed(seed, TILE_SEEDS + 2 * k)))
            weight = tile_weight(th, tw, overlap, i > 0, i < len(rows) - 1, j > 0,
                                 j < len(cols) - 1)
            out[:, y0:y0 + th, x0:x0 + tw] += image.float().cpu() * weight
            total[y0:y0 + th, x0:x0 + tw] += weight
            bar.update()
    bar.close()
    return keep_known((out / total).to(observation.device), observation, operator)


def keep_known(image: torch.Tensor, observation: torch.Tensor, operator: Operator
               ) -> torch.Tensor:
    """``image`` with the pixels a noise-free observation holds exactly as observed (an
    operator with :meth:`~dipprior.operators.Operator.holes`: 8-bit in, the same bytes out);
    ``image`` itself for any other operator."""
    if operator.holes() is None:
        return image
    known = operator.forward(torch.ones_like(observation)) != 0
    return torch.where(known, observation.to(image.dtype), image)


def _image(result: object) -> torch.Tensor:
    return result.image if hasattr(result, "image") else result  # type: ignore[return-value]
