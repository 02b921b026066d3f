"""Noise-free inpainting whose cost follows the holes: restore only windows around them.

The missing pixels are grouped (holes closer than ``2 * context`` pixels share a window) and each
group gets one window: its bounding box grown by ``context`` known pixels on every side (the
prior's and the biharmonic start's view of the surroundings), clipped to the image.  A window
longer than ``max_side``, or one that a thin diagonal hole leaves mostly empty, is split in two
along its longer side until it is neither.  Each window is restored on its own, as a crop with
the crop of the mask, seeded from its position; the rest of the image is copied, never seen by
the model.  Windows that overlap are blended with linear ramps over ``context`` pixels, as tiles
are (:mod:`dipprior.pipeline.tiles`); every missing pixel lies at least ``context`` pixels inside
one window, where that window's weight is 1.  Known pixels come back exactly as observed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from dipprior._seeds import stream_seed
from dipprior.operators import Operator
from dipprior.pipeline.tiles import keep_known, tile_weight

__all__ = ["CONTEXT", "WINDOW_SEEDS", "Window", "check_known", "check_windowed", "hole_windows",
           "missing_pixels", "restore_windows", "window_seed"]

#: known pixels around a hole, on each side, that its window shows the prior
CONTEXT = 32
WINDOW_SEEDS = 0x5BD1E995  # a window's stream: WINDOW_SEEDS + 2 k, k from its position (odd)
_SPARSE = 0.5  # a window less than this fraction near its holes is split (when large)


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of the image: rows ``y0:y0 + h``, columns ``x0:x0 + w``."""

    y0: int
    x0: int
    h: int
    w: int

    @property
    def pixels(self) -> int:
        return self.h * self.w

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """The window of a (..., H, W) tensor (a view)."""
        return tensor[..., self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]


def window_seed(seed: int, window: Window) -> int:
    """The seed a window is restored with: from the image's ``seed`` and the window's place
    alone, so a window gives the same result whatever other holes the image has."""
    k = (((window.y0 * 2**16 + window.x0) * 2**16 + window.h) * 2**16 + window.w) % 2**31
    return stream_seed(seed, WINDOW_SEEDS + 2 * k)


def missing_pixels(operator: Operator) -> np.ndarray:
    """(H, W) bool: the pixels the operator does not observe (its
    :meth:`~dipprior.operators.Operator.holes`)."""
    check_windowed(operator)
    return operator.holes().detach().cpu().numpy()


def hole_windows(missing: np.ndarray | torch.Tensor, context: int = CONTEXT,
                 max_side: int = 512) -> list[Window]:
    """The windows (sorted, row-major) that restore the ``True`` pixels of a (H, W) ``missing``
    map, each hole with ``context`` pixels around it, no side longer than ``max_side``
    (``>= 2 * context + 16``).  No missing pixel: no window.

    >>> m = np.zeros((100, 100), bool); m[50, 50] = True
    >>> hole_windows(m, context=8)
    [Window(y0=42, x0=42, h=17, w=17)]
    """
    from scipy.ndimage import find_objects, label, maximum_filter

    missing = np.asarray(missing.cpu() if isinstance(missing, torch.Tensor) else missing,
                         dtype=bool)
    if missing.ndim != 2:
        raise ValueError(f"missing: expected a (H, W) map, got shape {missing.shape}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context: expected an int >= 0, got {context!r}")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or \
            max_side < 2 * context + 16:
        raise ValueError(f"max_side: expected an int >= 2 * context + 16 = {2 * context + 16},"
                         f" got {max_side!r}")
    if not missing.any():
        return []
    grown = maximum_filter(missing.view(np.uint8), size=2 * context + 1) if context else missing
    labels, _ = label(grown)
    windows: list[Window] = []
    for k, region in enumerate(find_objects(labels), start=1):
        own = missing[region] & (labels[region] == k)
        _cover(own, region[0].start, region[1].start, missing.shape, context, max_side, windows)
    return sorted(set(windows))


def _cover(own: np.ndarray, y: int, x: int, shape: tuple[int, int], context: int,
           max_side: int, out: list[Window]) -> None:
    """Append the windows covering the True pixels of ``own`` (placed at row ``y``, column
    ``x`` of the image): one around them all, or those of its two halves."""
    rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
    if rows.size == 0:
        return
    own = own[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    y, x = y + int(rows[0]), x + int(cols[0])
    y0, x0 = max(0, y - context), max(0, x - context)
    y1, x1 = min(shape[0], y + own.shape[0] + context), min(shape[1], x + own.shape[1] + context)
    window = Window(y0, x0, y1 - y0, x1 - x0)
    split = max(window.h, window.w) > max_side or (
        window.pixels > (4 * context) ** 2 and _near_fraction(own, context) < _SPARSE)
    if not split or own.shape == (1, 1):
        out.append(window)
        return
    if own.shape[0] >= own.shape[1]:
        mid = own.shape[0] // 2
        _cover(own[:mid], y, x, shape, context, max_side, out)
        _cover(own[mid:], y + mid, x, shape, context, max_side, out)
    else:
        mid = own.shape[1] // 2
        _cover(own[:, :mid], y, x, shape, context, max_side, out)
        _cover(own[:, mid:], y, x + mid, shape, context, max_side, out)


def _near_fraction(own: np.ndarray, context: int) -> float:
    """The fraction of the window around ``own`` (grown by ``context``) within ``context``
    pixels of one of its True pixels: low for a thin diagonal hole's box."""
    from scipy.ndimage import maximum_filter

    padded = np.pad(own.view(np.uint8), context)
    return float(maximum_filter(padded, size=2 * context + 1).mean())


def restore_windows(restore: Callable[..., object], observation: torch.Tensor,
                    operator: Operator, seed: int = 0, *, context: int = CONTEXT,
                    max_side: int | None = 512, windows: list[Window] | None = None,
                    progress: bool = True) -> torch.Tensor:
    """``restore(y_window, op_window, seed=...)`` (e.g. a :class:`DIPInitializedSampler`) on
    the windows around the holes of a noise-free inpainting observation (3, H, W) -> the
    image: known pixels exactly as observed, missing ones from the windows (blended where
    windows overlap).  ``windows`` defaults to :func:`hole_windows` (``max_side`` None: no
    limit on a window's side); window ``w`` is seeded
    ``window_seed(seed, w)``, except a single window that is the whole image, which is restored
    with ``seed`` itself (the plain result).  No missing pixel: the observation, no call.
    """
    if observation.dim() != 3:
        raise ValueError(f"observation: expected one image (3, H, W), got shape "
                         f"{tuple(observation.shape)}")
    check_windowed(operator)
    operator.forward(observation)  # the mask matches the image
    h, w = observation.shape[-2:]
    missing = missing_pixels(operator)
    if windows is None:
        side = max_side if max_side is not None else max(h, w, 2 * context + 16)
        windows = hole_windows(missing, context, side)
    covered = np.zeros_like(missing)
    for window in windows:
        covered[window.y0:window.y0 + window.h, window.x0:window.x0 + window.w] = True
    if (missing & ~covered).any():
        raise ValueError("windows: some missing pixels lie in no window")
    check_known(operator, windows)
    if windows == [Window(0, 0, h, w)]:
        image = _image(restore(observation, operator, seed=seed))
        return keep_known(image.to(observation.dtype), observation, operator)
    total = torch.zeros(h, w)
    filled = torch.zeros(observation.shape)
    for window in tqdm(windows, desc="windows", unit="window", disable=not progress):
        op = operator.crop(window.y0, window.x0, window.h, window.w)
        image = _image(restore(window.crop(observation), op, seed=window_seed(seed, window)))
        weight = tile_weight(window.h, window.w, context, window.y0 > 0,
                             window.y0 + window.h < h, window.x0 > 0, window.x0 + window.w < w)
        window.crop(filled).add_(image.detach().float().cpu() * weight)
        window.crop(total).add_(weight)
    filled = (filled / total.clamp_min(1e-12)).to(observation.device, observation.dtype)
    return keep_known(filled, observation, operator)


def check_known(operator: Operator, windows: list[Window]) -> None:
    """Raise ValueError, before any work, if a window has no known pixel (a hole wider than
    the windows may be: nothing to start from)."""
    holes = operator.holes()
    for window in windows:
        if bool(window.crop(holes).all()):
            raise ValueError(f"operator: the {window.w}x{window.h} window at ({window.y0}, "
                             f"{window.x0}) has no known pixel (a hole larger than the windows "
                             "may be); use a larger --tile (max_side)")


def check_windowed(operator: Operator) -> None:
    """Raise ValueError unless ``operator`` has holes to restore around (its
    :meth:`~dipprior.operators.Operator.holes`: noise-free inpainting; with noise every known
    pixel needs the model too)."""
    if operator.holes() is None:
        raise ValueError(f"operator: windows around the holes serve operators with holes and "
                         f"no noise (noise-free inpainting), got {operator!r}; use tiles "
                         "(pipeline.tiles.restore_tiled)")


def _image(result: object) -> torch.Tensor:
    return result.image if hasattr(result, "image") else result  # type: ignore[return-value]
