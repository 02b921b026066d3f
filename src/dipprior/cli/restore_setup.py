"""``restore``'s options turned into the task, its operator and the sampler's settings."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dipprior.cli.options import (
    in_user_terms,
    parse_budget,
    sampler_fields,
    task_params,
)
from dipprior.pipeline.plan import settings_use_dip


@dataclass(frozen=True)
class TaskChoice:
    """The task of the command line, its parameters as given (None: the default, or for a
    real observation estimated where the task says so) and whether images are simulated."""

    task: Any
    params: dict[str, Any]
    simulate: bool

    def make(self, **values: Any) -> Any:
        """The task's operator or per-image factory (``values`` override parameters)."""
        from dipprior.operators import make_task

        return self._named(make_task, **values)

    def operator(self, image: Any, seed: int, **values: Any) -> Any:
        """The operator for ``image`` (a per-image factory draws from ``seed``)."""
        from dipprior.operators.registry import operator_for

        return self._named(operator_for, image, seed=seed, **values)

    def _named(self, build: Any, *args: Any, **values: Any) -> Any:
        try:  # its errors name the option the user typed
            return build(self.task.name, *args, real=not self.simulate,
                         **{**self.params, **values})
        except (ValueError, TypeError, OSError) as exc:
            raise in_user_terms(exc, self.task) from None


def task_from(args: argparse.Namespace) -> TaskChoice:
    """The task the options describe, checked before any work."""
    from dipprior.operators.registry import get_task

    choice = TaskChoice(get_task(args.task), task_params(args), bool(args.simulate))
    choice.make()  # refuses bad parameters now (an estimated level: its default meanwhile)
    return choice


def degrade_like(clean: Any, choice: TaskChoice, seed: int) -> tuple[Any, Any]:
    """``experiments.degrade`` with the task's operator; a grey image (identical channels) of a
    task that keeps it grey is degraded as one channel, as a grey camera would: the same noise
    in every channel."""
    from dipprior.experiments import degrade
    from dipprior.pipeline.grey import is_grey

    task = choice.make()
    if not is_grey(clean) or not choice.operator(clean, seed).keeps_grey:
        return degrade(clean, task, seed)
    op, y = degrade(clean[:1], task, seed)
    return op, y.expand(clean.shape[0], -1, -1)


def like_input(restored: Any, image: Any, op: Any) -> Any:
    """The restored image, grey (one channel) when the input image was and the task keeps it
    grey (:attr:`~dipprior.operators.Operator.keeps_grey`)."""
    from dipprior.pipeline.grey import is_grey

    return restored.mean(0, keepdim=True) if op.keeps_grey and is_grey(image) else restored


def real_operator(choice: TaskChoice, image: Any, seed: int = 0) -> tuple[Any, str]:
    """The operator of a real observation, and a note on a noise level estimated from it (a
    parameter the task lets the image tell; a per-image factory draws from ``seed``)."""
    from dipprior.estimators import estimate_noise_sigma

    values, note = {}, ""
    for param in choice.task.params:
        if param.estimate and choice.params.get(param.name) is None:
            sigma = float(estimate_noise_sigma(image[None])[0])
            values[param.name] = 255 * sigma
            note = f" (sigma estimated: {255 * sigma:.1f})"
    return choice.operator(image, seed, **values), note


def output_bits(source: Any, target: Any) -> int:
    """Bits per sample of a restored image: 16 for a 16-bit PNG input written as PNG (its known
    pixels and precision kept), else 8."""
    from pathlib import Path

    from dipprior import _png

    if Path(target).suffix.lower() != ".png":
        return 8
    with open(source, "rb") as f:
        header = _png.read_header(f.read(33))
    return 16 if header is not None and header["bit_depth"] == 16 else 8


def sampler_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler options given, as keyword settings: they refine each image's tuned preset
    (for ``--init``: that start's preset), as ``DIPInitializedSampler(**settings)`` does; none
    given (or ``--budget``) runs the presets as they are."""
    if args.budget is not None:
        dip_options = (args.dip_iterations, args.dip_channels, args.early_stopping,
                       args.save_dip)
        if sampler_fields(args, init=args.init) or args.no_guidance or any(
                v is not None for v in dip_options):
            raise ValueError("--budget: picks the start and chain itself; leave out the "
                             "sampler and DIP options (--init, --steps, --t0, "
                             "--dip-iterations, --save-dip, ...) or --budget")
        parse_budget(args)
        return {}
    settings = sampler_fields(args, init=None if args.init == "auto" else args.init)
    if args.no_guidance:
        settings["guidance"] = None
    return settings


def dip_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The DIP options given, as fields that refine the task's default DIP stage; None when
    none was given."""
    given = {"iterations": args.dip_iterations, "channels": args.dip_channels,
             "early_stopping": args.early_stopping}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    return {**given, "device": args.device, "progress": not args.no_progress}


def make_sampler(args: argparse.Namespace, settings: dict[str, Any], model: Any,
                 scheduler: Any, progress: bool = True) -> Any:
    """The sampler of ``restore``: each image's tuned preset refined by ``settings`` (or the
    ``--budget``'s point), the DIP options refining the task's default DIP stage."""
    from dipprior.pipeline import DIPInitializedSampler

    dip = dip_settings(args)
    if dip is not None and not settings_use_dip(None, settings):
        raise ValueError(f"{dip_option(args)}: the settings of --task {args.task} fit no DIP; "
                         "add --init dip (or --dip-observation) to fit one")
    return DIPInitializedSampler(model, scheduler, budget=parse_budget(args), dip=dip,
                                 device=args.device, progress=progress and not args.no_progress,
                                 **settings)


def dip_option(args: argparse.Namespace) -> str:
    """The first DIP option given, for messages."""
    for flag, value in (("--dip-iterations", args.dip_iterations),
                        ("--dip-channels", args.dip_channels),
                        ("--early-stopping", args.early_stopping)):
        if value is not None:
            return flag
    return "--dip-iterations"


def check_time_limit(args: argparse.Namespace) -> None:
    """``--time-limit``: finite seconds > 0 (``nan`` would switch the limit off)."""
    import math

    if not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise ValueError(f"--time-limit: expected seconds > 0 (a finite number), got "
                         f"{args.time_limit:g}")


#: the smallest image restored (the noise estimate and the networks' down-sampling need some)
MIN_SIDE = 8


def check_size(image: Any, name: str) -> None:
    """Refuse an image too small to restore, before any work."""
    h, w = image.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{name}: {w}x{h} pixels is too small to restore (at least "
                         f"{MIN_SIDE}x{MIN_SIDE})")


#: images with more pixels than this are restored in tiles (``--tile auto``)
TILE_ABOVE = 1024 * 1024
#: bytes per pixel of a tile while the prior runs on it, and of the whole image held during a
#: tiled run (observation, sums, output, PNG buffers), plus the process itself: fitted to a
#: 12 MP photo in 512-pixel tiles (3.08 GiB peak RSS, benchmarks/bench_large_photo.py)
TILE_BYTES_PER_PIXEL = 8192
IMAGE_BYTES_PER_PIXEL = 5 * 3 * 4
BASE_BYTES = 2**29
OVERHEAD = 1.7


def tile_size(args: argparse.Namespace, image: Any, op: Any) -> int | None:
    """``--tile``: None (one pass) or the tile side, checked with ``--overlap`` and the task;
    ``auto`` tiles images above :data:`TILE_ABOVE` pixels in 512-pixel tiles."""

    h, w = image.shape[-2:]
    if args.tile == "auto":
        tile = 512 if h * w > TILE_ABOVE else 0
    else:
        try:
            tile = int(args.tile)
        except ValueError:
            tile = -1
        if tile != 0 and tile < 16:
            raise ValueError(f"--tile: expected auto, 0 (never) or a side >= 16, got "
                             f"{args.tile!r}")
    if not tile or max(h, w) <= tile:
        return None
    if not 0 <= args.overlap < tile // 2:
        raise ValueError(f"--overlap: expected 0 to {tile // 2 - 1} for tiles of {tile}, got "
                         f"{args.overlap}")
    if op.crop(0, 0, tile, tile) is None:
        raise ValueError(f"--task {args.task}: {type(op).__name__} couples pixels across tile "
                         f"borders; a {w}x{h} image needs tiles of {tile} (--tile): crop or "
                         "downscale it first")
    from dipprior.pipeline.tiles import check_tiles

    if op.holes() is None:  # an operator with holes restores windows around them instead
        check_tiles(op, h, w, tile, args.overlap)
    return tile


def keep_known(result: Any, observation: Any, op: Any) -> Any:
    """The sampler's result with the known pixels of a noise-free observation exactly as given
    (:func:`dipprior.pipeline.tiles.keep_known`)."""
    from dipprior.pipeline import tiles

    result.image = tiles.keep_known(result.image, observation, op)
    return result


def inpaint_windows(args: argparse.Namespace, observation: Any, op: Any,
                    tile: int | None) -> list | None:
    """Noise-free inpainting of a photo restored in tiles (``tile``: large, or ``--tile N``):
    the windows around the holes (``--context`` pixels around each, sides at most ``tile``),
    checked before any work; None for another task, an image restored in one pass (as the
    sampler restores it), or when the one window is the whole image."""
    from dipprior.pipeline.windows import Window, check_known, hole_windows, missing_pixels

    if op.holes() is None or not tile:
        return None
    if args.context < 0:
        raise ValueError(f"--context: expected pixels >= 0, got {args.context}")
    h, w = observation.shape[-2:]
    side = tile
    if side < 2 * args.context + 16:
        raise ValueError(f"--context: {args.context} pixels around a hole need windows of at "
                         f"least {2 * args.context + 16} (--tile {tile}); use a smaller "
                         "--context or a larger --tile")
    windows = hole_windows(missing_pixels(op), args.context, side)
    if windows == [Window(0, 0, h, w)]:
        return None
    check_known(op, windows)
    return windows


def plan_cost(args: argparse.Namespace, observation: Any, op: Any, sampler: Any,
              tile: int | None, windows: list | None = None) -> str:
    """Estimated seconds and memory of the restoration (the sampler's own :meth:`plan` of an
    image, or of its first tile or largest window), printed before any work; refuses (one line,
    naming the options that help) what does not fit in memory or in ``--time-limit``.  With
    ``windows`` (noise-free inpainting) only the windows count: the rest is copied."""
    import os

    from dipprior.pipeline.tiles import tile_starts
    from dipprior.pipeline.windows import Window

    h, w = op.input_shape(tuple(observation.shape))[-2:]  # the restored image (sr: the large one)
    side = tile or max(h, w)
    tile_pixels = min(side, h) * min(side, w)
    if windows is not None:  # the model sees the windows only: the largest sets the memory
        largest = max(windows, key=lambda win: win.pixels, default=None)
        side = max((max(win.h, win.w) for win in windows), default=16)
        tile_pixels = largest.pixels if largest is not None else 0
        crop = largest or Window(0, 0, min(16, h), min(16, w))
        window_op = op.crop(crop.y0, crop.x0, crop.h, crop.w)
        plan = sampler.plan(crop.crop(observation), window_op)[0]
    elif tile:  # the sampler plans each tile as a call of its own
        th, tw = min(side, h), min(side, w)
        plan = sampler.plan(observation[..., :th, :tw], op.crop(0, 0, th, tw))[0]
    else:
        plan = sampler.plan(observation, op)[0]
    model, cfg = sampler.model, plan.config
    nfe, iterations, adapt_nfe = plan.nfe, plan.dip_iterations, plan.adapt_passes
    copy_bytes, backward_per_pixel = 0.0, 0.0
    if cfg.adapt is not None:
        copy_bytes = 4.0 * sum(t.numel() for t in model.parameters())  # the adapted copy
        backward_per_pixel = 3 * TILE_BYTES_PER_PIXEL * cfg.adapt.batch  # kept for backward
    n_tiles = len(tile_starts(h, side, args.overlap)) * len(tile_starts(w, side, args.overlap))
    work_pixels = (n_tiles * tile_pixels if windows is None
                   else sum(win.pixels for win in windows))
    # a DIP iteration costs about one NFE; OVERHEAD: the sampler's own work per tile, blending
    # and writing (measured on the 12 MP photo: 506 s where the model calls alone read 300 s)
    seconds = (OVERHEAD * _seconds_per_pixel(model, min(512, side), tile is not None
                                             or windows is not None) * work_pixels
               * (nfe + iterations + adapt_nfe)) if work_pixels else 0.0
    memory = (BASE_BYTES + IMAGE_BYTES_PER_PIXEL * h * w
              + TILE_BYTES_PER_PIXEL * tile_pixels * cfg.samples * cfg.ensemble
              + copy_bytes + backward_per_pixel * tile_pixels)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no memory check
        available = float("inf")
    what = f"{w}x{h} ({w * h / 1e6:.1f} MP)"
    chains = TILE_BYTES_PER_PIXEL * tile_pixels * cfg.ensemble  # the memory of one more chain
    if memory > 0.8 * available and cfg.samples > 1 and memory - (cfg.samples - 1) * chains \
            <= 0.8 * available:  # the chains are what does not fit
        fit = int((0.8 * available - memory) // chains) + cfg.samples
        raise ValueError(f"--samples: {cfg.samples} chains per {'tile' if tile else 'image'} "
                         f"of {what} need about {memory / 2**30:.1f} GiB, more than this "
                         f"machine's {available / 2**30:.1f} GiB allows; use --samples {fit} "
                         "or fewer")
    if memory > 0.8 * available:
        raise ValueError(f"IMAGE: {what} needs about {memory / 2**30:.1f} GiB, more than this "
                         f"machine's {available / 2**30:.1f} GiB allows; use a smaller --tile "
                         f"(now {tile or 'none'})"
                         + (f" or a smaller --ensemble (now {cfg.ensemble})"
                            if cfg.ensemble > 1 else ""))
    if seconds > args.time_limit:
        raise ValueError(f"IMAGE: {what} would take about {seconds / 60:.0f} min "
                         f"({nfe} NFE{f' + {iterations} DIP iterations' if iterations else ''}"
                         f"{f' + about {adapt_nfe} for --adapt' if adapt_nfe else ''} "
                         f"per {'window' if windows else 'tile' if tile else 'image'}), over "
                         f"--time-limit "
                         f"{args.time_limit:g} s; use --budget fast, fewer --steps, or a "
                         "larger --time-limit")
    tiles = f" in {n_tiles} tiles of {side}" if tile else ""
    if windows is not None:
        n = len(windows)
        largest = max(windows, key=lambda win: win.pixels, default=None)
        at_most = f"{largest.w}x{largest.h} at most, " if largest is not None else ""
        tiles = (f": {n} window{'s' if n != 1 else ''} around the holes ({at_most}"
                 f"{work_pixels / (h * w):.1%} of the pixels; the rest is copied)")
    return f"{what}{tiles}: expect about {seconds:.0f} s and {memory / 2**30:.1f} GiB"


#: seconds per pixel of one model call, per (model, calibration size)
_PER_PIXEL: dict[tuple[int, int, bool], float] = {}


def _seconds_per_pixel(model: Any, side: int, parts: bool = False) -> float:
    """One timed model call on a ``side`` x ``side`` input (up to 512: a call's cost per pixel
    grows with its size; a 256x256 call read 1.5x too fast for a 1024x768 image), once per
    model and size; ``parts``: as tiles and windows run (:func:`large_photo_speed`)."""
    import time

    import torch

    key = (id(model), side, parts)
    if key not in _PER_PIXEL:
        x = torch.zeros(1, 3, side, side, device=next(model.parameters()).device)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        speed = large_photo_speed(model) if parts else contextlib.nullcontext()
        with torch.inference_mode(), speed:
            model(x, torch.tensor([500], device=x.device))
            sync()
            began = time.perf_counter()
            model(x, torch.tensor([500], device=x.device))
            sync()
        _PER_PIXEL[key] = (time.perf_counter() - began) / side**2
    return _PER_PIXEL[key]


@contextlib.contextmanager
def large_photo_speed(model: Any) -> Iterator[None]:
    """While a large photo is restored in tiles or windows: dipprior's UNet with channels-last
    convolutions and self-attention within 128-pixel windows -- 2.2x faster per 480-pixel tile
    than 0.1.0's attention on the 2-core CPU, PSNR unchanged to 0.001 dB on 8 Kodak24 crops
    (``benchmarks/bench_attention.py``); another model runs as it is."""
    if not (hasattr(model, "attention_window") and hasattr(model, "channels_last")):
        yield
        return
    before = model.channels_last, model.attention_window
    model.channels_last, model.attention_window = True, 128
    try:
        yield
    finally:
        model.channels_last, model.attention_window = before
