"""``dipprior demo``: the main job, offline, on the shipped prior and scikit-image's photos.

Center crops of photos bundled with scikit-image (:data:`dipprior.io.SAMPLE_IMAGES`; none of them
is in the prior's training set CBSD432) are degraded -- Gaussian noise sigma=25 by default,
``task="inpaint"`` (half the pixels missing) or ``task="sr"`` (x4 bicubic down-sampling) -- and
restored four ways, each method with the settings tuned for the task on CBSD432 training crops
(:mod:`dipprior.pipeline.presets`):

* **DIP**: the Deep Image Prior fitted to the observation, alone (0 diffusion NFE);
* **DDPM**: the shipped diffusion prior from pure noise, ``ddpm_steps`` reverse steps with
  proximal data consistency (DiffPIR);
* **Observation->DDPM**: the prior started from the observation (DiffPIR's warm start; for
  denoising one step, the prior as a one-step denoiser);
* **DIP->DDPM**: the same DIP fit, forward-diffused to ``t0`` ("auto": from an error estimate that
  never sees the clean image) and ``steps`` reverse steps (:class:`~dipprior.pipeline.
  DIPInitializedSampler`).  DIP runs once per image; its seconds count towards DIP->DDPM.

Every table is scored against the clean crop (data range 1, no rescaling), printed per method in
the seed's format (Image, PSNR, SSIM, MSE, MAE, Delta E, then NFE and seconds, with the
average), and written with a comparison figure into ``out``:
``results.csv``, ``results.md`` and ``demo.png`` (labelled with method and PSNR, with or without
matplotlib), and every restored image as ``images/<image>_<method>.png`` (the method name made
file-name safe: ``DIP->DDPM`` becomes ``DIP-DDPM``).

Example:
    >>> from dipprior.demo import DemoConfig, run_demo
    >>> result = run_demo(DemoConfig(images=("chelsea",), size=16, dip_iterations=5,
    ...                              ddpm_steps=3, steps=2), out="/tmp/demo",
    ...                   progress=False, log=None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dipprior._tensor import default_device
from dipprior.experiments import COLUMNS, Case, compare, make_task, save_figure
from dipprior.metrics import ResultsTable, results_table
from dipprior.metrics import psnr as psnr_of
from dipprior.pipeline.presets import method_configs

__all__ = ["DEFAULT_IMAGES", "METHODS", "QUICK", "DemoConfig", "DemoResult", "run_demo",
           "save_figure"]

DEFAULT_IMAGES = ("astronaut", "chelsea", "motorcycle")
METHODS = ("DIP", "DDPM", "Observation->DDPM", "DIP->DDPM")
TASKS = ("denoise", "inpaint", "sr")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults take a few minutes on 2 CPU cores.

    ``images`` are names from :data:`dipprior.io.SAMPLE_IMAGES`, center-cropped to ``size``.
    ``sigma`` (0..255) is the denoising noise; ``keep`` the fraction of known pixels for
    inpainting; ``factor`` the super-resolution factor.  DIP: ``dip_iterations`` and
    ``dip_channels`` (per scale).  Diffusion: the task's tuned presets
    (:func:`~dipprior.pipeline.presets.method_configs`) with ``ddpm_steps`` for DDPM from noise,
    ``steps`` for DIP->DDPM (None: the preset's) from ``t0`` (int timestep, float strength or
    "auto"); an ``eta`` > 0
    replaces the presets' DiffPIR ``zeta`` by DDIM's eta.
    Image ``i`` is degraded with ``seed + i`` and every method is seeded with it too.
    """

    task: str = "denoise"
    images: tuple[str, ...] = DEFAULT_IMAGES
    size: int = 96
    sigma: float = 25.0
    keep: float = 0.5
    factor: int = 4
    dip_iterations: int = 600
    dip_channels: int = 64
    ddpm_steps: int = 100
    steps: int | None = None
    t0: int | float | str = "auto"
    eta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        from dipprior.io import SAMPLE_IMAGES

        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise ValueError("images: expected at least one sample image name")
        unknown = [n for n in self.images if n not in SAMPLE_IMAGES]
        if unknown:
            raise ValueError(f"images: unknown sample images {unknown}; choose from "
                             f"{SAMPLE_IMAGES}")
        for name in ("size", "dip_iterations", "dip_channels", "ddpm_steps", "steps", "factor"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.task == "sr" and self.size % self.factor:
            raise ValueError(f"size: {self.size} is not divisible by the SR factor "
                             f"{self.factor}")


# the `--quick` budget: about a minute on 2 CPU cores
QUICK = {"images": DEFAULT_IMAGES[:2], "size": 64, "dip_iterations": 400, "ddpm_steps": 25,
         "steps": 5}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the table, the images and the files written."""

    table: ResultsTable
    config: DemoConfig
    images: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    figure: Path | None = None
    csv: Path | None = None
    markdown: Path | None = None
    image_files: list[Path] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0


# ----------------------------------------------------------------------------- the job


def _display_observation(y: torch.Tensor, op: Any, shape: Sequence[int]) -> torch.Tensor:
    """The observation as an image of the clean image's size (nearest up-sampling for SR)."""
    if tuple(y.shape) == tuple(shape):
        return y.clamp(0, 1)
    scale = shape[-1] // y.shape[-1]
    return y.clamp(0, 1).repeat_interleave(scale, -1).repeat_interleave(scale, -2)


def _file_stem(name: str) -> str:
    """``name`` made safe as part of a file name: every run of characters other than letters,
    digits, ``.`` and ``_`` becomes one ``-`` (``"DIP->DDPM"`` -> ``"DIP-DDPM"``)."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-.") or "image"


def run_demo(
    config: DemoConfig | None = None,
    *,
    out: str | os.PathLike | None = "dipprior-demo",
    model: Any = None,
    scheduler: Any = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> DemoResult:
    """Restore the demo images with DIP, DDPM and DIP->DDPM; score, tabulate and draw them.

    Args:
        config: a :class:`DemoConfig` (default: the full demo).
        out: folder for ``results.csv``, ``results.md``, ``demo.png`` and the restored images
            ``images/<image>_<method>.png`` (created); None writes nothing.
        model, scheduler: the diffusion prior (default: the shipped one,
            :func:`dipprior.diffusion.load_pretrained`).
        device: None: CUDA if available, else CPU.
        progress: tqdm bars for DIP and the reverse chains.
        log: called with progress lines and the final tables (``print`` by default; None is
            silent).

    Returns:
        A :class:`DemoResult`; its ``table`` has columns Image, Method, PSNR, SSIM, MSE, MAE,
        Delta E, NFE, Seconds, per image and method, then one average row per method.
    """
    from dipprior.dip import DIPConfig
    from dipprior.io import sample_image
    from dipprior.pipeline import DIPBaseline, DIPInitializedSampler

    config = config or DemoConfig()
    say = log or (lambda _msg: None)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    device = default_device(device)
    if model is None or scheduler is None:
        from dipprior.diffusion import load_pretrained

        model, scheduler = load_pretrained(device=device)
    dip = DIPConfig(iterations=config.dip_iterations, channels=config.dip_channels,
                    device=device, progress=progress)
    tuned = method_configs(config.task)
    noise = {"eta": config.eta, "zeta": None} if config.eta > 0 else {}
    run = {"device": device, "progress": progress}
    methods = {"DIP": DIPBaseline(dip, **run),
               "DDPM": DIPInitializedSampler(
                   model, scheduler, tuned["DDPM"].replace(steps=config.ddpm_steps, **noise),
                   **run),
               "Observation->DDPM": DIPInitializedSampler(
                   model, scheduler, tuned["Observation->DDPM"].replace(**noise), **run),
               "DIP->DDPM": DIPInitializedSampler(
                   model, scheduler, tuned["DIP->DDPM"].replace(
                       t0=config.t0, **noise, **({} if config.steps is None else
                                                 {"steps": config.steps})),
                   dip=dip, **run)}
    images = {name: sample_image(name, size=config.size) for name in config.images}
    panels: dict[str, dict[str, torch.Tensor]] = {}
    rows: list[dict[str, Any]] = []

    def keep(case: Case, method: str, image: torch.Tensor, row: Mapping[str, Any]) -> None:
        if method == METHODS[0]:
            say(f"[{case.index + 1}/{len(images)}] {case.name}: {config.task}, "
                f"{config.size}x{config.size}")
            panels[case.name] = {"Ground truth": case.clean, "Degraded": _display_observation(
                case.observation, case.operator, case.clean.shape)}
        panels[case.name][method] = image.clamp(0, 1)
        rows.append(dict(row))
        say(f"    {method:<10} PSNR {row['psnr']:6.2f} dB  NFE {row['NFE']:4d}  "
            f"{row['Seconds']:6.1f} s" + (f"  (t0={row['t0']})" if method == "DIP->DDPM" else ""))

    compare(images, make_task(config.task, sigma=config.sigma, keep=config.keep,
                              factor=config.factor),
            methods, seed=config.seed, on_result=keep, progress=False)
    table = results_table(rows, COLUMNS)
    result = DemoResult(table=table, config=config, images=panels)
    text = _report(table, config, device)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.csv = out / "results.csv"
        table.to_csv(result.csv)
        psnr = {(r["Image"], r["Method"]): r["psnr"] for r in rows}
        if config.task == "denoise":  # the observation is an image of the same size
            psnr.update({(name, "Degraded"): float(psnr_of(p["Degraded"], p["Ground truth"]))
                         for name, p in panels.items()})
        result.figure = save_figure(panels, psnr, out / "demo.png", title=_figure_title(config))
        result.image_files = _save_images(panels, out / "images")
    result.wall_seconds = time.perf_counter() - wall0
    result.cpu_seconds = time.process_time() - cpu0
    timing = (f"Total: {result.wall_seconds:.1f} s wall clock, {result.cpu_seconds:.1f} s CPU "
              f"({torch.get_num_threads()} threads, {platform.machine()}, torch "
              f"{torch.__version__}, device {device}).")
    if out is not None:
        from dipprior._atomic import atomic_write_text

        result.markdown = out / "results.md"
        atomic_write_text(result.markdown, f"{text}\n{timing}\n")
    say(text)
    say(timing)
    if out is not None:
        say(f"Wrote {result.figure}, {result.csv}, {result.markdown} and "
            f"{len(result.image_files)} restored images in {out / 'images'}.")
    return result


def _save_images(panels: Mapping[str, Mapping[str, torch.Tensor]], folder: Path) -> list[Path]:
    """Every method's restored image as ``<image>_<method>.png`` (atomic each)."""
    from dipprior.io import save_image

    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(images[method], folder / f"{_file_stem(name)}_{_file_stem(method)}.png")
            for name, images in panels.items() for method in METHODS if method in images]


# ----------------------------------------------------------------------------- report


def _task_label(config: DemoConfig) -> str:
    if config.task == "denoise":
        return f"denoising sigma={config.sigma:g}/255"
    if config.task == "inpaint":
        return f"inpainting, {100 * (1 - config.keep):g}% of pixels missing"
    return f"super-resolution x{config.factor} (bicubic)"


def _figure_title(config: DemoConfig) -> str:
    steps = "preset" if config.steps is None else config.steps
    return (f"{_task_label(config)}; DIP {config.dip_iterations} it; DDPM {config.ddpm_steps} "
            f"NFE; DIP->DDPM <= {steps} steps from t0={config.t0}; tuned presets")


def _report(table: ResultsTable, config: DemoConfig, device: Any) -> str:
    settings = {k: v for k, v in dataclasses.asdict(config).items()}
    lines = [f"# dipprior demo: {_task_label(config)}", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + f", "
             f"device={device}.", "",
             "Seconds of DIP->DDPM include its DIP fit (shared with DIP alone). NFE counts "
             "diffusion-model evaluations.", ""]
    for method in METHODS:
        rows = [{k: v for k, v in row.items() if k != "Method"}
                for row in table.rows if row.get("Method") == method and row["Image"] != "Average"]
        sub = results_table(rows, ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE",
                                   "Seconds"])
        lines += [f"## {method}", "", sub.to_markdown()]
    averages = [{"Image": row["Method"], **{k: v for k, v in row.items()
                                             if k not in ("Image", "Method")}}
                for row in table.rows if row["Image"] == "Average"]
    summary = results_table(averages, ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE",
                                       "Seconds"], average=False)
    lines += ["## Averages (Image = method)", "", summary.to_markdown()]
    return "\n".join(lines)
