"""``restore``'s options turned into the task, its operator and the sampler's settings."""

from __future__ import annotations

import argparse
from typing import Any

from dipprior.cli.options import (
    blur_kernel,
    dip_config,
    parse_budget,
    sampler_config,
    simulated_sigma,
)

#: ``task_from``'s answer for real noisy images without ``--sigma``: estimate sigma per image
ESTIMATE_SIGMA = object()


class _BlurredEstimate:
    """``task_from``'s answer for real blurred images without ``--sigma``: the kernel is known,
    the noise level is estimated per image."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel


def task_from(args: argparse.Namespace) -> Any:
    """The operator (or operator factory) the options describe."""
    from dipprior.experiments import make_task
    from dipprior.operators import Inpaint, mask_from_image

    if args.task == "inpaint" and args.mask:
        return Inpaint(mask_from_image(args.mask))
    if args.task == "inpaint" and not args.simulate:
        raise ValueError("--mask PNG is required to inpaint real images (or use --simulate "
                         "to drop random pixels of clean ones)")
    if args.task == "box" and not args.simulate:
        raise ValueError("--task box cuts a centred 32x32 hole into a clean image and needs "
                         "--simulate; to fill holes of a real image use --task inpaint --mask "
                         "PNG")
    if args.task == "denoise" and args.sigma is None and not args.simulate:
        return ESTIMATE_SIGMA
    if args.task == "deblur":
        from dipprior.operators import Blur

        kernel = blur_kernel(args)
        if args.sigma is None and not args.simulate:
            return _BlurredEstimate(kernel)
        return Blur(kernel, simulated_sigma(args) / 255)
    return make_task(args.task, sigma=simulated_sigma(args), keep=args.keep,
                     factor=args.factor)


def degrade_like(clean: Any, task: Any, seed: int) -> tuple[Any, Any]:
    """``experiments.degrade``; a grey image (identical channels) is degraded as one channel, as
    a grey camera would: the same noise in every channel."""
    from dipprior.experiments import degrade
    from dipprior.pipeline.grey import is_grey

    if not is_grey(clean):
        return degrade(clean, task, seed)
    op, y = degrade(clean[:1], task, seed)
    return op, y.expand(clean.shape[0], -1, -1)


def like_input(restored: Any, image: Any) -> Any:
    """The restored image, grey (one channel) when the input image was."""
    from dipprior.pipeline.grey import is_grey

    return restored.mean(0, keepdim=True) if is_grey(image) else restored


def real_operator(task: Any, image: Any) -> tuple[Any, str]:
    """The operator for a real observation, and a note on its estimated noise level."""
    if task is not ESTIMATE_SIGMA and not isinstance(task, _BlurredEstimate):
        return task, ""
    from dipprior.estimators import estimate_noise_sigma
    from dipprior.operators import Blur, Denoise

    sigma = float(estimate_noise_sigma(image[None])[0])
    op = Blur(task.kernel, sigma) if isinstance(task, _BlurredEstimate) else Denoise(sigma)
    return op, f" (sigma estimated: {255 * sigma:.1f})"


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


#: the preset each --init starts from (``pipeline.presets.method_configs``)
PRESET_OF_INIT = {"noise": "DDPM", "observation": "Observation->DDPM", "dip": "DIP->DDPM",
                  "classical": "Classical->DDPM"}


def _kind(task: Any) -> Any:
    """An operator of the task's kind (presets and the default DIP stage depend on nothing
    else): the operator itself, or a noise-free stand-in for a factory of masks."""
    from dipprior.operators import Denoise

    if task is ESTIMATE_SIGMA:
        return Denoise(1 / 255)  # any sigma > 0: Gaussian denoising
    if isinstance(task, _BlurredEstimate):
        from dipprior.operators import Blur

        return Blur(task.kernel, 0.01)
    return task if hasattr(task, "proximal") else Denoise(0.0)


def sampler_settings(args: argparse.Namespace, task: Any) -> Any:
    """The sampler settings: None (no option given) runs the task's recommended preset, or
    with ``--budget`` the front's point for it; options given change the task's preset for the
    chosen ``--init`` (the recommended one without it)."""
    from dipprior.pipeline.presets import method_configs, recommended_config

    if args.budget is not None:
        dip_options = (args.dip_iterations, args.dip_channels, args.early_stopping,
                       args.save_dip)
        if sampler_config(args, init=args.init) is not None or args.no_guidance or any(
                v is not None for v in dip_options):
            raise ValueError("--budget: picks the start and the chain itself; leave out the "
                             "sampler and DIP options (--init, --steps, --t0, "
                             "--dip-iterations, --save-dip, ...) or --budget")
        parse_budget(args)
        return None

    if args.init in (None, "auto"):
        base = recommended_config(_kind(task))
    else:
        base = method_configs(args.task)[PRESET_OF_INIT[args.init]]
    config = sampler_config(args, base, init=args.init)
    if args.no_guidance:
        config = (config or base).replace(guidance=None)
    return config


def dip_settings(args: argparse.Namespace, task: Any) -> Any:
    """The DIP stage: None (no option given) is the default stage for the task; options given
    change that default stage."""
    from dipprior.pipeline.sampler import default_dip_config

    return dip_config(args, default_dip_config(_kind(task)))


def uses_dip(config: Any, task: Any, args_budget: float | str | None = None) -> bool:
    """Whether the run fits DIP: as the start, or as the second observation on top of another
    start (the presets and init="auto" skip it)."""
    from dipprior.pipeline.presets import budget_config, recommended_config
    from dipprior.pipeline.tasks import resolve_init

    if config is None:
        config = (recommended_config(_kind(task)) if args_budget is None
                  else budget_config(_kind(task), args_budget))
    init = resolve_init([_kind(task)]) if config.init == "auto" else config.init
    return init == "dip" or (config.dip_observation and init != "noise")


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
    from dipprior.operators import Denoise, Inpaint

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
    if not isinstance(op, (Denoise, Inpaint)):
        raise ValueError(f"--task {args.task}: {type(op).__name__} couples pixels across tile "
                         f"borders; a {w}x{h} image needs tiles of {tile} (--tile): crop or "
                         "downscale it first")
    from dipprior.pipeline.tiles import check_tiles

    if not is_noise_free_inpainting(op):  # those restore windows around the holes instead
        check_tiles(op, h, w, tile, args.overlap)
    return tile


def is_noise_free_inpainting(op: Any) -> bool:
    """Whether ``op`` is inpainting without noise: restored in windows around the holes."""
    from dipprior.operators import Inpaint

    return isinstance(op, Inpaint) and op.noise_sigma == 0


def inpaint_windows(args: argparse.Namespace, observation: Any, op: Any,
                    tile: int | None) -> list | None:
    """Noise-free inpainting: the windows around the holes (``--context`` pixels around each,
    sides at most ``tile``), checked before any work; None for another task or when the one
    window is the whole image (restored in one pass, as without windows)."""
    from dipprior.pipeline.windows import Window, check_known, hole_windows, missing_pixels

    if not is_noise_free_inpainting(op):
        return None
    if args.context < 0:
        raise ValueError(f"--context: expected pixels >= 0, got {args.context}")
    h, w = observation.shape[-2:]
    side = tile or max(h, w, 2 * args.context + 16)
    if side < 2 * args.context + 16:
        raise ValueError(f"--context: {args.context} pixels around a hole need windows of at "
                         f"least {2 * args.context + 16} (--tile {tile}); use a smaller "
                         "--context or a larger --tile")
    windows = hole_windows(missing_pixels(op), args.context, side)
    if windows == [Window(0, 0, h, w)]:
        return None
    check_known(op, windows)
    return windows


def plan_cost(args: argparse.Namespace, image: Any, op: Any, config: Any, dip: Any,
              model: Any, tile: int | None, windows: list | None = None) -> str:
    """Estimated seconds and memory of the restoration, printed before any work; refuses (one
    line, naming the options that help) what does not fit in memory or in ``--time-limit``.
    With ``windows`` (noise-free inpainting) only the windows count: the rest is copied."""
    import os

    from dipprior.pipeline.presets import budget_config, recommended_config
    from dipprior.pipeline.tasks import default_dip_config
    from dipprior.pipeline.tiles import tile_starts

    h, w = op.input_shape(tuple(image.shape))[-2:]  # the restored image (sr: the large one)
    side = tile or max(h, w)
    tile_pixels = min(side, h) * min(side, w)
    if windows is not None:  # the model sees the windows only: the largest sets the memory
        largest = max(windows, key=lambda win: win.pixels, default=None)
        side = max((max(win.h, win.w) for win in windows), default=16)
        tile_pixels = largest.pixels if largest is not None else 0
    budget = parse_budget(args)  # the sampler picks the budget's point per call: per tile
    cfg = config or (budget_config(op, budget, tile_pixels) if budget is not None
                     else recommended_config(op))
    nfe = cfg.samples * cfg.steps
    iterations = (dip or default_dip_config(op)).iterations if uses_dip(cfg, op) else 0
    adapt_nfe, copy_bytes, backward_per_pixel = 0, 0.0, 0.0
    if cfg.adapt is not None:  # an iteration: a forward and a backward pass (~3 NFE) per image
        a = cfg.adapt
        adapt_nfe = 3 * a.iterations * a.batch * -(-cfg.steps // a.every)
        copy_bytes = 4.0 * sum(t.numel() for t in model.parameters())  # the adapted copy
        backward_per_pixel = 3 * TILE_BYTES_PER_PIXEL * a.batch  # activations kept for backward
    n_tiles = len(tile_starts(h, side, args.overlap)) * len(tile_starts(w, side, args.overlap))
    work_pixels = (n_tiles * tile_pixels if windows is None
                   else sum(win.pixels for win in windows))
    # a DIP iteration costs about one NFE; OVERHEAD: the sampler's own work per tile, blending
    # and writing (measured on the 12 MP photo: 506 s where the model calls alone read 300 s)
    seconds = (OVERHEAD * _seconds_per_pixel(model, min(256, side)) * work_pixels
               * (nfe + iterations + adapt_nfe)) if work_pixels else 0.0
    memory = (BASE_BYTES + IMAGE_BYTES_PER_PIXEL * h * w
              + TILE_BYTES_PER_PIXEL * tile_pixels * cfg.samples
              + copy_bytes + backward_per_pixel * tile_pixels)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no memory check
        available = float("inf")
    what = f"{w}x{h} ({w * h / 1e6:.1f} MP)"
    if memory > 0.8 * available:
        raise ValueError(f"IMAGE: {what} needs about {memory / 2**30:.1f} GiB, more than this "
                         f"machine's {available / 2**30:.1f} GiB allows; use a smaller --tile "
                         f"(now {tile or 'none'})")
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
_PER_PIXEL: dict[tuple[int, int], float] = {}


def _seconds_per_pixel(model: Any, side: int) -> float:
    """One timed model call on a ``side`` x ``side`` input, once per model (a folder plans
    every image; a 64x64 call read 1.6x too fast per pixel for 512-pixel tiles, 256 is used)."""
    import time

    import torch

    key = (id(model), side)
    if key not in _PER_PIXEL:
        x = torch.zeros(1, 3, side, side, device=next(model.parameters()).device)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        with torch.inference_mode():
            model(x, torch.tensor([500], device=x.device))
            sync()
            began = time.perf_counter()
            model(x, torch.tensor([500], device=x.device))
            sync()
        _PER_PIXEL[key] = (time.perf_counter() - began) / side**2
    return _PER_PIXEL[key]
