"""Comparison and ablation grids: restoration methods over a set of images -> tables and plots.

* :func:`compare` runs several methods on every image and scores them (PSNR, SSIM, MSE, MAE,
  Delta E, NFE, seconds) into a :class:`~dipprior.metrics.ResultsTable` with per-method averages.
* :func:`quality_vs_nfe` traces quality against model evaluations and wall-clock for the three
  initialisations; :func:`plot_quality_vs_nfe` draws it (matplotlib, optional).
* :func:`t0_ablation` scores fixed start timesteps and ``"auto"`` from one DIP fit per image.

All three are data-parallel when launched under ``torchrun``: call :func:`init_distributed` first;
rank ``r`` of ``w`` takes images ``r, r + w, ...`` and every rank receives the gathered rows
(write files from rank 0 only).  The degradation of image ``i`` (noise, random mask) and every
method's randomness use ``seed + i``, so the numbers do not depend on the number of processes.

Example:
    >>> import torch
    >>> from dipprior.operators import Denoise
    >>> images = {"flat": torch.full((3, 16, 16), 0.5)}
    >>> table = compare(images, Denoise(0.1), {"Identity": lambda y, op, seed: y},
    ...                 progress=False)
    >>> [row["Image"] for row in table.rows], table.columns[:3]
    (['flat', 'Average'], ['Image', 'Method', 'PSNR'])
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from dipprior.metrics import ResultsTable, evaluate, results_table
from dipprior.operators import Denoise, Inpaint, Operator, SuperResolution, random_pixel_mask
from dipprior.pipeline import (
    CBM3DBaseline,
    DIPBaseline,
    DIPInitializedSampler,
    fit_dip,
)

__all__ = [
    "METHOD_LABELS",
    "best_fixed_t0",
    "compare",
    "gather",
    "DIPCache",
    "init_distributed",
    "load_folder",
    "make_task",
    "paired_difference",
    "plot_quality_vs_nfe",
    "prepare_images",
    "quality_vs_nfe",
    "shard",
    "standard_methods",
    "t0_ablation",
]

Method = Callable[..., Any]
OperatorFactory = Callable[[torch.Tensor, torch.Generator], Operator]
Images = Mapping[str, torch.Tensor] | Sequence[torch.Tensor]
T = TypeVar("T")

# init -> the label used in every table and plot
METHOD_LABELS = {"dip": "DIP->DDPM", "noise": "DDPM", "observation": "Observation->DDPM"}
COLUMNS = ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE", "Seconds"]


# ----------------------------------------------------------------------------- data parallel


def init_distributed() -> tuple[int, int]:
    """Join the ``torchrun`` process group (gloo) if launched by it -> ``(rank, world_size)``.

    Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) nothing happens: ``(0, 1)``.
    gloo carries the gathered rows (Python objects) on CPU and GPU machines alike.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items rank ``rank`` of ``world_size`` processes: ``items[rank::world_size]``.

    >>> shard(list(range(7)), 1, 3)
    [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size, got rank={rank}, "
                         f"world_size={world_size}")
    return list(items)[rank::world_size]


def gather(rows: list[T]) -> list[T]:
    """Every rank's ``rows``, concatenated in rank order, on every rank (identity if alone)."""
    import torch.distributed as dist

    rank, world = _rank_world()
    if world == 1:
        return list(rows)
    parts: list[list[T] | None] = [None] * world
    dist.all_gather_object(parts, list(rows))
    return [row for part in parts for row in (part or [])]


# ----------------------------------------------------------------------------- inputs


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


def _operator_for(operator: Operator | OperatorFactory, image: torch.Tensor,
                  generator: torch.Generator) -> Operator:
    # operators are callable too (op(x) = forward): tell them apart by their proximal map
    if hasattr(operator, "proximal"):
        return operator  # type: ignore[return-value]
    if callable(operator):
        op = operator(image, generator)
        if not hasattr(op, "proximal"):
            raise TypeError(f"operator: the factory returned {type(op).__name__}, "
                            f"not an operator")
        return op
    raise TypeError(f"operator: expected an operator or a factory (image, generator) -> "
                    f"operator, got {type(operator).__name__}")


def _degrade(index: int, image: torch.Tensor, operator: Operator | OperatorFactory,
             seed: int) -> tuple[Operator, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + index)
    op = _operator_for(operator, image, generator)
    return op, op.degrade(image, generator)


def load_folder(folder: str | os.PathLike, n_images: int | None = None,
                size: int | None = None) -> dict[str, torch.Tensor]:
    """The first ``n_images`` images of ``folder`` in sorted file-name order, center-cropped to
    ``size`` x ``size`` (None: whole images) -> ``{stem: (3, H, W) tensor}``."""
    from pathlib import Path

    from dipprior.io import center_crop, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {str(folder)!r} is not a directory")
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
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


def make_task(task: str, *, sigma: float = 25.0, keep: float = 0.5, factor: int = 4,
              kernel: str = "bicubic") -> Operator | OperatorFactory:
    """The degradation of a named task for :func:`compare` and friends.

    ``"denoise"``: :class:`~dipprior.operators.Denoise` with ``sigma`` in 0..255 units;
    ``"inpaint"``: a factory drawing a fresh random pixel mask keeping the fraction ``keep`` per
    image (noise-free observation); ``"sr"``: :class:`~dipprior.operators.SuperResolution` by
    ``factor`` (noise-free).
    """
    if task == "denoise":
        return Denoise(sigma / 255.0)
    if task == "inpaint":
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep: expected a fraction in (0, 1], got {keep}")

        def factory(image: torch.Tensor, generator: torch.Generator) -> Operator:
            return Inpaint(random_pixel_mask(image.shape[-2:], keep, generator))

        return factory
    if task == "sr":
        return SuperResolution(factor, kernel)
    raise ValueError(f"task: expected 'denoise', 'inpaint' or 'sr', got {task!r}")


class DIPCache:
    """DIP reconstructions on disk, so that several experiments fit each observation once.

    The key hashes the observation's bytes, the DIP config and the seed: a hit is exactly what
    a new (deterministic) fit would return on the same device.  Entries are safetensors files
    with the fit's seconds and iterations in the metadata (the seconds are reported as the
    method's DIP time).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        from pathlib import Path

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def key(self, observation: torch.Tensor, config: Any, seed: int) -> str:
        import hashlib

        h = hashlib.sha256()
        h.update(observation.detach().cpu().float().contiguous().numpy().tobytes())
        if dataclasses.is_dataclass(config):  # the progress bar does not change the result
            config = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
        h.update(repr((tuple(observation.shape), config, seed)).encode())
        return h.hexdigest()[:32]

    def get(self, key: str) -> tuple[torch.Tensor, float, int | None] | None:
        from dipprior.diffusion.checkpoint import read_tensors

        path = self.directory / f"{key}.safetensors"
        if not path.is_file():
            return None
        tensors, meta = read_tensors(path)
        iterations = int(meta["iterations"]) if meta.get("iterations") else None
        return tensors["image"], float(meta.get("seconds", 0.0)), iterations

    def put(self, key: str, image: torch.Tensor, seconds: float,
            iterations: int | None) -> None:
        from dipprior.diffusion.checkpoint import save_tensors

        save_tensors(self.directory / f"{key}.safetensors", {"image": image},
                     {"seconds": repr(float(seconds)), "iterations": str(iterations or "")})


def _as_cache(cache: DIPCache | str | os.PathLike | None) -> DIPCache | None:
    if cache is None or isinstance(cache, DIPCache):
        return cache
    return DIPCache(cache)


def _fit_dip_cached(y: torch.Tensor, op: Operator, config: Any, seed: int,
                    cache: DIPCache | None, device: str | torch.device | None,
                    progress: bool) -> tuple[torch.Tensor, float]:
    """A DIP fit (or its cached copy) -> ``(image, seconds of the original fit)``."""
    config = _dip_config(config)
    key = cache.key(y, config, seed) if cache is not None else None
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit[0], hit[1]
    start = time.perf_counter()
    image, result = fit_dip(y, op, config, seed=seed,
                            device=None if device is None else torch.device(device),
                            progress=progress)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.put(key, image, seconds, getattr(result, "iterations", None))
    return image, seconds


# ----------------------------------------------------------------------------- methods


def standard_methods(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: Any,
    *,
    dip: Any = None,
    steps: int = 10,
    ddpm_steps: int = 100,
    t0: int | float | str = "auto",
    eta: float = 0.0,
    guidance_scale: float = 10.0,
    renoise: str = "auto",
    cbm3d: bool = True,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Method]:
    """The methods of the paper table: DIP, DDPM (from noise), DIP->DDPM, Observation->DDPM,
    and CBM3D (denoising only) when the optional ``bm3d`` package is installed and ``cbm3d``.

    DDPM runs ``ddpm_steps`` steps over the whole chain; the two warm starts run ``steps``
    steps from ``t0``.  All use the same guidance (proximal, ``guidance_scale``) and ``eta``;
    ``renoise`` applies to DIP->DDPM (see :class:`~dipprior.pipeline.DIPInitializedSampler`).
    """
    common = dict(eta=eta, guidance="proximal", guidance_scale=guidance_scale, device=device,
                  progress=progress)
    methods: dict[str, Method] = {
        "DIP": DIPBaseline(dip, device=device, progress=progress),
        "DDPM": DIPInitializedSampler(model, scheduler, init="noise", steps=ddpm_steps,
                                      **common),
        "DIP->DDPM": DIPInitializedSampler(model, scheduler, init="dip", dip=dip, steps=steps,
                                           t0=t0, renoise=renoise, **common),
        "Observation->DDPM": DIPInitializedSampler(model, scheduler, init="observation",
                                                   steps=steps, t0=t0, **common),
    }
    if cbm3d:
        try:
            methods["CBM3D"] = CBM3DBaseline()
        except ImportError:
            pass
    return methods


def _applies(method: Method, operator: Operator) -> bool:
    return not isinstance(method, CBM3DBaseline) or isinstance(operator, Denoise)


def _dip_key(method: Method) -> str | None:
    """Methods that start with the same DIP fit share it (same config, same seed)."""
    if isinstance(method, DIPBaseline) or (
            isinstance(method, DIPInitializedSampler) and method.init == "dip"):
        return repr(method.dip)
    return None


def _run(method: Method, y: torch.Tensor, op: Operator, seed: int,
         cache: dict[str, tuple[torch.Tensor, float]] | None,
         disk: DIPCache | None) -> tuple[Any, float]:
    """Call ``method``; DIP-based methods share one fit per config (its seconds are added)."""
    key = _dip_key(method) if cache is not None else None
    if key is None:
        start = time.perf_counter()
        result = method(y, op, seed=seed)
        return result, time.perf_counter() - start
    if key not in cache:
        cache[key] = _fit_dip_cached(y, op, method.dip, seed, disk, method.device,
                                     method.progress)
    dip_image, dip_seconds = cache[key]
    start = time.perf_counter()
    result = method(y, op, seed=seed, dip_image=dip_image)
    return result, time.perf_counter() - start + dip_seconds


def _image_of(result: Any, name: str) -> torch.Tensor:
    image = result.image if hasattr(result, "image") else result
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"methods: {name!r} returned {type(result).__name__}; expected a "
                        f"SampleResult or an image tensor")
    return image.detach().float().cpu()


# ----------------------------------------------------------------------------- compare


def compare(
    images: Images,
    operator: Operator | OperatorFactory,
    methods: Mapping[str, Method],
    *,
    seed: int = 0,
    share_dip: bool = True,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    progress: bool = True,
) -> ResultsTable:
    """Run every method on every degraded image and tabulate the scores.

    Args:
        images: clean [0, 1] images, a dict name -> (3, H, W) tensor or a list.
        operator: one operator for all images, or a factory ``(image, generator) -> operator``
            (e.g. a fresh random mask per image drawn from ``generator``).
        methods: name -> callable ``method(observation, operator, seed=...)`` returning a
            :class:`~dipprior.pipeline.SampleResult` or an image tensor, e.g. a
            :class:`~dipprior.pipeline.DIPInitializedSampler` (see :func:`standard_methods`).
            CBM3D is skipped on operators other than denoising.
        seed: image ``i`` is degraded with ``seed + i`` and each method is called with it.
        share_dip: DIP alone and DIP->DDPM with the same DIP config fit DIP once per image
            (fits are deterministic); the reused fit's seconds are added to each method's time.
        dip_cache: a :class:`DIPCache` (or its directory) to keep DIP fits across runs.
        progress: a bar over the images (the methods' own bars are theirs).

    Returns:
        A :class:`~dipprior.metrics.ResultsTable` with columns Image, Method, PSNR, SSIM, MSE,
        MAE, Delta E, NFE (diffusion model evaluations; 0 for DIP and CBM3D), Seconds (wall
        clock, including the DIP fit) and t0, per image in input order, then the per-method
        averages.
    """
    from tqdm.auto import tqdm

    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("methods: expected a non-empty dict name -> callable")
    for name, method in methods.items():
        if not callable(method):
            raise TypeError(f"methods: {name!r} is not callable")
    items = list(enumerate(prepare_images(images)))
    disk = _as_cache(dip_cache)
    rank, world = _rank_world()
    rows = []
    for index, (name, clean) in tqdm(shard(items, rank, world), disable=not progress,
                                     desc=f"compare[{rank}]" if world > 1 else "compare"):
        op, y = _degrade(index, clean, operator, seed)
        cache: dict[str, tuple[torch.Tensor, float]] | None = {} if share_dip else None
        for order, (mname, method) in enumerate(methods.items()):
            if not _applies(method, op):
                continue
            result, seconds = _run(method, y, op, seed + index, cache, disk)
            image = _image_of(result, mname)
            rows.append({"_index": index, "_order": order, "Image": name, "Method": mname,
                         **evaluate(image, clean), "NFE": int(getattr(result, "nfe", 0) or 0),
                         "Seconds": seconds, "t0": getattr(result, "t0", None)})
    rows = sorted(gather(rows), key=lambda r: (r["_index"], r["_order"]))
    for row in rows:
        del row["_index"], row["_order"]
    columns = COLUMNS + (["t0"] if any(r["t0"] is not None for r in rows) else [])
    return results_table(rows, columns, formats={"t0": ".1f"})


# ----------------------------------------------------------------------------- quality vs NFE


def quality_vs_nfe(
    images: Images,
    operator: Operator | OperatorFactory,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: Any,
    *,
    steps: Iterable[int] = (1, 2, 5, 10, 20, 50, 100),
    inits: Iterable[str] = ("dip", "noise", "observation"),
    t0: int | float | str = "auto",
    dip: Any = None,
    eta: float = 0.0,
    guidance_scale: float = 10.0,
    renoise: str = "auto",
    seed: int = 0,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """PSNR (and SSIM) against NFE and seconds for each initialisation, averaged over images.

    One DIP fit per image serves every ``steps`` value of ``init="dip"``; its seconds are
    included in that method's time.  A warm start whose ``t0`` is below ``steps - 1`` runs
    ``t0 + 1`` steps (the NFE column says what was run), and repeated settings are dropped.

    Returns:
        Rows ``{"Method", "Steps", "NFE", "PSNR", "SSIM", "Seconds", "Images"}``, one per
        method and distinct requested ``steps``, means over the images ("NFE" is the mean NFE
        actually run, so a warm start with an auto ``t0`` may run fewer steps on some images).
        With ``"dip"`` in ``inits`` the first row is DIP alone (Steps and NFE 0).
    """
    from tqdm.auto import tqdm

    steps = sorted({int(s) for s in steps})
    inits = list(inits)
    for init in inits:
        if init not in METHOD_LABELS:
            raise ValueError(f"inits: unknown init {init!r}; expected {list(METHOD_LABELS)}")
    if not steps or steps[0] < 1:
        raise ValueError(f"steps: expected positive ints, got {steps}")
    T = scheduler.num_train_timesteps
    items = list(enumerate(prepare_images(images)))
    disk = _as_cache(dip_cache)
    rank, world = _rank_world()
    per_image = []
    for index, (_, clean) in tqdm(shard(items, rank, world), disable=not progress,
                                  desc="quality_vs_nfe"):
        op, y = _degrade(index, clean, operator, seed)
        dip_image, dip_seconds = None, 0.0
        if "dip" in inits:
            dip_image, dip_seconds = _fit_dip_cached(y, op, dip, seed + index, disk, device,
                                                     progress)
            per_image.append({"Method": "DIP", "Steps": 0, "NFE": 0,
                              **_scores(dip_image.clamp(0, 1), clean), "Seconds": dip_seconds})
        for init in inits:
            for n in steps:
                start_t = T - 1 if init == "noise" else t0
                fixed = None if start_t == "auto" else _resolve(start_t, T)
                if fixed is not None and n > fixed + 1:
                    continue
                sampler = DIPInitializedSampler(model, scheduler, init=init, steps=n, t0=start_t,
                                                eta=eta, guidance_scale=guidance_scale,
                                                renoise=renoise if init == "dip" else "auto",
                                                device=device, progress=False)
                r = sampler(y, op, seed=seed + index, dip_image=dip_image)
                extra = dip_seconds if init == "dip" else 0.0
                per_image.append({"Method": METHOD_LABELS[init], "Steps": n, "NFE": r.nfe,
                                  **_scores(r.image, clean),
                                  "Seconds": r.seconds["total"] + extra})
    per_image = gather(per_image)
    rows = []
    dip_rows = [r for r in per_image if r["Method"] == "DIP"]
    if dip_rows:  # the reference: DIP alone, NFE 0
        rows.append({"Method": "DIP", "Steps": 0, "NFE": 0.0,
                     **{k: float(np.mean([r[k] for r in dip_rows]))
                        for k in ("PSNR", "SSIM", "Seconds")}, "Images": len(dip_rows)})
    for init in inits:
        label = METHOD_LABELS[init]
        seen_nfe: set[tuple[int, ...]] = set()
        for n in steps:
            group = [r for r in per_image if r["Method"] == label and r["Steps"] == n]
            if not group:
                continue
            nfes = tuple(r["NFE"] for r in group)
            if nfes in seen_nfe:  # every image was already clamped to these steps
                continue
            seen_nfe.add(nfes)
            rows.append({"Method": label, "Steps": n, "NFE": float(np.mean(nfes)),
                         "PSNR": float(np.mean([r["PSNR"] for r in group])),
                         "SSIM": float(np.mean([r["SSIM"] for r in group])),
                         "Seconds": float(np.mean([r["Seconds"] for r in group])),
                         "Images": len(group)})
    return rows


def _scores(image: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    m = evaluate(image.detach().float().cpu(), clean)
    return {"PSNR": float(m["psnr"]), "SSIM": float(m["ssim"])}


def _resolve(t0: int | float, T: int) -> int:
    from dipprior.pipeline import resolve_t0

    return resolve_t0(t0, T)


def _dip_config(dip: Any) -> Any:
    if dip is not None:
        return dip
    from dipprior.dip import DIPConfig

    return DIPConfig()


def plot_quality_vs_nfe(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                        *, title: str | None = None) -> None:
    """Two panels, PSNR against NFE and against seconds (log x), one line per method.

    Written atomically as PNG.  Needs matplotlib (``pip install dipprior[plot]``).
    """
    from dipprior._mpl import pyplot

    plt = pyplot()
    if plt is None:
        raise ImportError("plot_quality_vs_nfe needs matplotlib: pip install matplotlib")
    import io

    from dipprior._atomic import atomic_write_bytes

    if not rows:
        raise ValueError("rows: empty")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    methods = list(dict.fromkeys(r["Method"] for r in rows))
    for method in methods:
        sel = sorted((r for r in rows if r["Method"] == method), key=lambda r: r["NFE"])
        if all(r["NFE"] == 0 for r in sel):  # no diffusion (DIP alone): a reference level
            line = axes[0].axhline(sel[0]["PSNR"], ls="--", color="gray", label=method)
            axes[1].plot([max(r["Seconds"], 1e-3) for r in sel], [r["PSNR"] for r in sel], "s",
                         color=line.get_color(), label=method)
            continue
        for ax, key in zip(axes, ("NFE", "Seconds"), strict=True):
            ax.plot([max(r[key], 1e-3) for r in sel], [r["PSNR"] for r in sel], "o-",
                    label=method)
    for ax, label in zip(axes, ("NFE (diffusion model evaluations)",
                                "seconds per image (incl. DIP fit)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- t0 ablation


def t0_ablation(
    images: Images,
    operator: Operator | OperatorFactory,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: Any,
    *,
    t0s: Iterable[int | float | str] = (10, 20, 40, 80, 160, 320, "auto"),
    steps: int = 10,
    dip: Any = None,
    guidance: str | None = "proximal",
    eta: float = 0.0,
    guidance_scale: float = 10.0,
    renoise: str = "auto",
    seed: int = 0,
    dip_cache: DIPCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ResultsTable:
    """DIP->DDPM from each start timestep in ``t0s`` (ints, strengths or ``"auto"``).

    One DIP fit per image serves all settings (the "DIP" rows, t0 empty).  Each setting runs
    ``min(steps, t0 + 1)`` steps.  Returns a table with Image, Method (``t0=<value>``, ``auto``
    or ``DIP``), PSNR, SSIM, MSE, MAE, Delta E, NFE, t0 (the timestep used) and "Error std"
    (the auto estimate, [0, 1] scale), with per-setting averages.
    """
    from tqdm.auto import tqdm

    t0s = list(t0s)
    if not t0s:
        raise ValueError("t0s: empty")
    T = scheduler.num_train_timesteps
    fixed = {}
    for v in t0s:
        if v != "auto":
            fixed[str(v)] = _resolve(v, T)
    items = list(enumerate(prepare_images(images)))
    disk = _as_cache(dip_cache)
    rank, world = _rank_world()
    rows = []
    for index, (name, clean) in tqdm(shard(items, rank, world), disable=not progress,
                                     desc="t0_ablation"):
        op, y = _degrade(index, clean, operator, seed)
        dip_image, _ = _fit_dip_cached(y, op, dip, seed + index, disk, device, progress)
        rows.append({"_index": index, "_order": -1, "Image": name, "Method": "DIP",
                     **evaluate(dip_image, clean), "NFE": 0})
        for order, v in enumerate(t0s):
            n = steps if v == "auto" else min(steps, fixed[str(v)] + 1)
            sampler = DIPInitializedSampler(model, scheduler, init="dip", steps=n, t0=v,
                                            guidance=guidance, eta=eta,
                                            guidance_scale=guidance_scale, renoise=renoise,
                                            device=device, progress=False)
            r = sampler(y, op, seed=seed + index, dip_image=dip_image)
            label = "auto" if v == "auto" else f"t0={v}"
            rows.append({"_index": index, "_order": order, "Image": name, "Method": label,
                         **evaluate(r.image, clean), "NFE": r.nfe, "t0": r.t0,
                         "Error std": r.error_std})
    rows = sorted(gather(rows), key=lambda r: (r["_index"], r["_order"]))
    for row in rows:
        del row["_index"], row["_order"]
    columns = ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE", "t0",
               "Error std"]
    return results_table(rows, columns, formats={"t0": ".1f", "Error std": ".4f"})


def best_fixed_t0(table: ResultsTable) -> dict[str, Any]:
    """Summarise a :func:`t0_ablation` table: the best fixed setting on average, the per-image
    oracle (best fixed setting per image, scored with the clean image -- for reporting only)
    and ``auto``'s mean PSNR and its gap to both.
    """
    per_image = [r for r in table.rows if r["Image"] != "Average"]
    avgs = {r["Method"]: r["PSNR"] for r in table.rows
            if r["Image"] == "Average" and r["Method"].startswith("t0=")}
    if not avgs:
        raise ValueError("table: no fixed t0 settings")
    best = max(avgs, key=avgs.get)
    names = list(dict.fromkeys(r["Image"] for r in per_image))
    oracle = []
    for name in names:
        fixed = [r["PSNR"] for r in per_image if r["Image"] == name
                 and r["Method"].startswith("t0=")]
        oracle.append(max(fixed))
    auto = [r["PSNR"] for r in per_image if r["Method"] == "auto"]
    out = {"best_fixed": best, "best_fixed_psnr": avgs[best],
           "oracle_psnr": float(np.mean(oracle))}
    if auto:
        out["auto_psnr"] = float(np.mean(auto))
        out["auto_minus_best_fixed"] = out["auto_psnr"] - avgs[best]
        out["auto_minus_oracle"] = out["auto_psnr"] - out["oracle_psnr"]
    return {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in out.items()}


def paired_difference(table: ResultsTable, method: str, baseline: str,
                      metric: str = "PSNR") -> dict[str, Any]:
    """Per-image ``metric(method) - metric(baseline)`` from a :func:`compare` table.

    Returns ``{"per_image": {image: diff}, "mean": ..., "min": ..., "max": ..., "wins": n,
    "images": n}`` over the images that have both methods (``wins``: images where the method
    is strictly better).
    """
    values: dict[str, dict[str, float]] = {}
    for row in table.rows:
        if row["Image"] != "Average" and row.get("Method") in (method, baseline):
            values.setdefault(row["Image"], {})[row["Method"]] = float(row[metric])
    diffs = {img: v[method] - v[baseline] for img, v in values.items()
             if method in v and baseline in v}
    if not diffs:
        raise ValueError(f"table: no image has both {method!r} and {baseline!r}")
    d = np.array(list(diffs.values()))
    return {"per_image": diffs, "mean": float(d.mean()), "min": float(d.min()),
            "max": float(d.max()), "wins": int((d > 0).sum()), "images": len(d)}


# ----------------------------------------------------------------------------- command line


def parse_t0(text: str) -> int | float | str:
    """``"auto"``, an int timestep (``"40"``) or a float strength (``"0.05"``) from text."""
    text = str(text).strip()
    if text == "auto":
        return text
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"t0: expected an int, a float strength or 'auto', got {text!r}") from None


def _load_prior(args: Any) -> tuple[Any, Any]:
    from dipprior.diffusion import load, load_pretrained

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        return load(args.model, device=device)
    try:
        return load_pretrained(device=device)
    except ValueError as exc:
        raise ValueError(f"--model DIR is required: no usable pretrained prior ({exc})"
                         ) from None


def _dip_from_args(args: Any) -> Any:
    from dipprior.dip import DIPConfig

    return DIPConfig(iterations=args.dip_iterations, channels=args.dip_channels,
                     early_stopping=args.early_stopping,
                     device=args.device, progress=not args.no_progress)


def _cli_guard(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """Print a bad-input error as ``dipprior: error: ...`` and exit with status 2."""
    import functools
    import sys

    @functools.wraps(run)
    def wrapper(args: Any) -> int:
        try:
            return run(args)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            print(f"dipprior {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return wrapper


@_cli_guard
def run_restore(args: Any) -> int:
    """Handler of ``dipprior restore`` (see ``dipprior restore --help``)."""
    from dipprior.io import load_image, save_image
    from dipprior.operators import mask_from_image

    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = _load_prior(args)
    image = load_image(args.image)
    clean = None
    if args.simulate:
        clean = image
        generator = torch.Generator().manual_seed(args.seed)
        if args.task == "inpaint" and args.mask:
            op: Operator = Inpaint(mask_from_image(args.mask))
        else:
            op = _operator_for(make_task(args.task, sigma=args.sigma, keep=args.keep,
                                         factor=args.factor), clean, generator)
        observation = op.degrade(clean, generator)
    else:
        if args.task == "inpaint":
            if not args.mask:
                raise ValueError("--mask PNG is required to inpaint a real image (or use "
                                 "--simulate to drop random pixels of a clean one)")
            op = Inpaint(mask_from_image(args.mask))
        else:
            op = make_task(args.task, sigma=args.sigma, factor=args.factor)  # type: ignore
        observation = image
    sampler = DIPInitializedSampler(
        model, scheduler, dip=_dip_from_args(args), steps=args.steps, eta=args.eta,
        t0=parse_t0(args.t0), init=args.init, guidance=None if args.no_guidance else "proximal",
        guidance_scale=args.guidance_scale, renoise=args.renoise, device=args.device,
        progress=not args.no_progress)
    result = sampler(observation, op, seed=args.seed)
    save_image(result.image, args.out)
    if args.save_dip and result.dip_image is not None:
        save_image(result.dip_image.clamp(0, 1), args.save_dip)
    line = (f"wrote {args.out}: t0={result.t0}, NFE={result.nfe}, seconds DIP "
            f"{result.seconds['dip']:.1f} + diffusion {result.seconds['diffusion']:.1f}")
    if clean is not None:
        m = evaluate(result.image, clean)
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
        if result.dip_image is not None:
            line += f" (DIP alone {evaluate(result.dip_image, clean)['psnr']:.2f} dB)"
    print(line)
    return 0


@_cli_guard
def run_compare(args: Any) -> int:
    """Handler of ``dipprior compare`` (see ``dipprior compare --help``)."""
    from pathlib import Path

    if args.threads:
        torch.set_num_threads(args.threads)
    rank, _ = init_distributed()
    model, scheduler = _load_prior(args)
    images = load_folder(args.folder, args.n_images, args.size)
    operator = make_task(args.task, sigma=args.sigma, keep=args.keep, factor=args.factor)
    methods = standard_methods(model, scheduler, dip=_dip_from_args(args), steps=args.steps,
                               ddpm_steps=args.ddpm_steps, t0=parse_t0(args.t0), eta=args.eta,
                               guidance_scale=args.guidance_scale, renoise=args.renoise,
                               cbm3d=not args.no_cbm3d, device=args.device)
    table = compare(images, operator, methods, seed=args.seed, dip_cache=args.dip_cache,
                    progress=not args.no_progress)
    if rank == 0:
        print(table.to_markdown())
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            from dipprior._atomic import atomic_write_text

            atomic_write_text(out / f"compare_{args.task}.md", table.to_markdown())
            table.to_csv(out / f"compare_{args.task}.csv")
            print(f"wrote {out / f'compare_{args.task}.md'} and .csv")
    return 0
