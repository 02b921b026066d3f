"""``dipprior demo``: the main job, offline, on the shipped prior and scikit-image's photos.

Center crops of photos bundled with scikit-image (:data:`dipprior.io.SAMPLE_IMAGES`; none of them
is in the prior's training set) are degraded -- by default half the pixels missing
(``"inpaint"``), a centred hole (``"box"``) and Gaussian noise sigma=25 (``"denoise"``); any
registered task on request -- and restored by every method a user would weigh, each the sampler
a user gets with the same keywords (the task's tuned presets): the **classical peer** (the
operator's classical restoration; CBM3D for denoising, where ``bm3d`` is installed),
**DiffPIR (noise)** (the prior from pure noise, ``ddpm_steps`` steps), **DIP** alone,
**Classical->DDPM** (the classical start; for denoising the observation, the prior's one step),
**DIP->DDPM** (the same DIP fit as start; its seconds count) and the library's **default**
(``DIPInitializedSampler(model, scheduler)``, marked ``(default)``).

Every table is scored against the clean crop (data range 1, no rescaling), printed per method
(Image, PSNR, SSIM, MSE, MAE, Delta E, NFE, seconds, with averages), and written into ``out``:
``results.csv`` (with a Task column), ``results.md``, ``demo.png`` (the hole tasks, or the first
task), ``demo_<task>.png`` for each other task, and every restored image as
``images/<task>/<image>_<method>.png`` (``DIP->DDPM`` becomes ``DIP-DDPM``).

Example:
    >>> from dipprior.demo import DemoConfig, run_demo
    >>> result = run_demo(DemoConfig(tasks=("inpaint",), images=("chelsea",), size=16,
    ...                              dip_iterations=5, ddpm_steps=3, steps=2),
    ...                   out="/tmp/demo", progress=False, log=None)  # doctest: +SKIP
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
from dipprior.experiments import COLUMNS, Case, compare, save_figure
from dipprior.metrics import SSIM_MIN_SIZE, ResultsTable, results_table
from dipprior.metrics import psnr as psnr_of
from dipprior.operators import TASKS as REGISTRY
from dipprior.operators import make_task
from dipprior.operators.blur import DEBLUR_BLUR, DEBLUR_SIGMA
from dipprior.operators.registry import operator_for

__all__ = ["DEFAULT_IMAGES", "HOLES", "QUICK", "DemoConfig", "DemoResult", "methods_of",
           "run_demo"]

DEFAULT_IMAGES = ("astronaut", "chelsea", "motorcycle")
DEMO_COLUMNS = ["Task", *COLUMNS]
TASKS = tuple(REGISTRY)  # every registered task (operators.TASKS)
HOLES = ("inpaint", "box")  # drawn together in demo.png


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults take a few minutes on 2 CPU cores.

    ``tasks`` (registered names, ``operators.TASKS``) run in order, each with its own table;
    the fields named as a task's parameters (``sigma``, ``keep``, ``box``, ``factor``, ``blur``,
    ``blur_sigma``) set them, the others keep their defaults.  ``images`` are names from
    :data:`dipprior.io.SAMPLE_IMAGES`, center-cropped to ``size``.  DIP: ``dip_iterations`` and
    ``dip_channels`` (per scale).  Diffusion: the task's tuned presets
    (:func:`~dipprior.pipeline.presets.method_configs`) with ``ddpm_steps`` for DiffPIR from
    noise, ``steps`` for DIP->DDPM (None: the preset's) from ``t0`` (int timestep, float
    strength or "auto"); an ``eta`` > 0 replaces the presets' DiffPIR ``zeta`` by DDIM's eta.
    Image ``i`` is degraded with ``seed + i`` and every method is seeded with it too.
    """

    tasks: tuple[str, ...] = ("inpaint", "box", "denoise")
    images: tuple[str, ...] = DEFAULT_IMAGES[:2]
    size: int = 80
    sigma: float = 25.0
    keep: float = 0.5
    box: int = 24
    factor: int = 4
    blur: str = DEBLUR_BLUR
    blur_sigma: float = DEBLUR_SIGMA
    dip_iterations: int = 400
    dip_channels: int = 16
    ddpm_steps: int = 100
    steps: int | None = None
    t0: int | float | str = "auto"
    eta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        from dipprior.io import SAMPLE_IMAGES

        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        bad = [t for t in tasks if t not in TASKS]
        if not tasks or bad or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks: expected distinct names from {TASKS}, got {self.tasks!r}")
        object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise ValueError("images: expected at least one sample image name")
        unknown = [n for n in self.images if n not in SAMPLE_IMAGES]
        if unknown:
            raise ValueError(f"images: unknown sample images {unknown}; choose from "
                             f"{SAMPLE_IMAGES}")
        for name in ("size", "dip_iterations", "dip_channels", "ddpm_steps", "factor", "box",
                     *(("steps",) if self.steps is not None else ())):  # steps: None or an int
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.size < SSIM_MIN_SIZE:
            raise ValueError(f"size: expected at least {SSIM_MIN_SIZE} (SSIM's 11x11 window), "
                             f"got {self.size}")
        if "sr" in tasks and self.size % self.factor:
            raise ValueError(f"size: {self.size} is not divisible by the SR factor "
                             f"{self.factor}")
        if "box" in tasks and self.box >= self.size:
            raise ValueError(f"box: a {self.box}-pixel hole does not fit a {self.size}-pixel "
                             f"crop")
        for task in REGISTRY:  # every setting in its units, before any work
            make_task(task, **task_params(self))
        for task in tasks:  # each task's own checks on a crop of this size
            task_operator(task, self, torch.zeros(3, self.size, self.size))


# the `--quick` budget: about a minute on 2 CPU cores
QUICK = {"tasks": HOLES, "images": DEFAULT_IMAGES[:1], "size": 64, "box": 20,
         "dip_iterations": 300, "ddpm_steps": 25, "steps": 5}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the tables, the images and the files written."""

    table: ResultsTable  # every task, with a Task column
    config: DemoConfig
    tables: dict[str, ResultsTable] = field(default_factory=dict)  # task -> its table
    images: dict[str, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)
    figure: Path | None = None  # demo.png
    figures: list[Path] = field(default_factory=list)
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


def task_params(config: DemoConfig) -> dict[str, Any]:
    """The demo's settings that are task parameters (``operators.TASKS``)."""
    return {k: v for k, v in dataclasses.asdict(config).items()
            if any(k == p.name for t in REGISTRY.values() for p in t.params)}


def task_operator(task: str, config: DemoConfig, image: torch.Tensor) -> Any:
    """``task``'s operator for ``image``, its observation checked (a bad setting is refused
    before any work, naming it)."""
    op = operator_for(task, image, **task_params(config))
    op.degrade(image, torch.Generator().manual_seed(0))
    return op


def methods_of(task: str, model: Any, scheduler: Any, config: DemoConfig, dip: Any,
               run: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's methods for ``task``, each the sampler a user gets with the same keywords
    (the task's tuned presets), labelled; the one the library runs by default is labelled
    ``"<name> (default)"``."""
    from dipprior.pipeline import (
        CBM3DBaseline,
        ClassicalBaseline,
        DIPBaseline,
        DIPInitializedSampler,
    )

    image = torch.zeros(3, config.size, config.size)
    op = task_operator(task, config, image)
    noise = {"eta": config.eta} if config.eta > 0 else {}
    methods: dict[str, Any] = {}
    if op.identity:
        try:
            methods["CBM3D"] = CBM3DBaseline()
        except ImportError:
            pass
    else:
        methods[op.classical_name] = ClassicalBaseline()
    chains = {"DiffPIR (noise)": {"init": "noise", "steps": config.ddpm_steps, **noise},
              "DIP": None,
              # the classical start of denoising is the observation: the prior's one step
              "Classical->DDPM": {"init": "observation" if op.identity else "classical",
                                  **noise},
              "DIP->DDPM": {"init": "dip", **noise,
                            **({} if config.t0 == "auto" else {"t0": config.t0}),
                            **({} if config.steps is None else {"steps": config.steps})}}
    samplers = {label: DIPInitializedSampler(model, scheduler, **settings, **run,
                                             **({"dip": dip} if settings["init"] == "dip"
                                                else {}))
                for label, settings in chains.items() if settings is not None}
    default = DIPInitializedSampler(model, scheduler, **noise, **run)
    y = op.forward(image)
    planned = {label: s.plan(y, op)[0].config for label, s in samplers.items()}
    default_config = default.plan(y, op)[0].config
    if default_config not in planned.values():
        samplers[f"Classical x{default_config.samples}"] = default  # the mean of its chains
        planned[f"Classical x{default_config.samples}"] = default_config
    for label in [*chains, *(k for k in samplers if k not in chains)]:
        if label == "DIP":
            methods[label] = DIPBaseline(dip, **run)
            continue
        name = label + (" (default)" if planned[label] == default_config else "")
        methods[name] = samplers[label]
    return methods


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
    """Restore the demo images with every method of each task; score, tabulate and draw them.

    Args:
        config: a :class:`DemoConfig` (default: the full demo).
        out: folder for ``results.csv``, ``results.md``, the figures and the restored images
            ``images/<task>/<image>_<method>.png`` (created); None writes nothing.
        model, scheduler: the diffusion prior (default: the shipped one,
            :func:`dipprior.diffusion.load_pretrained`).
        device: None: CUDA if available, else CPU.
        progress: tqdm bars for DIP and the reverse chains.
        log: called with progress lines and the final tables (``print`` by default; None is
            silent).

    Returns:
        A :class:`DemoResult`; its ``table`` has columns Task, Image, Method, PSNR, SSIM, MSE,
        MAE, Delta E, NFE, Seconds: for each task its rows per image and method, then its
        average row per method (``tables`` holds one table per task).
    """
    from dipprior.dip import DIPConfig
    from dipprior.io import sample_image

    config = config or DemoConfig()
    say = log or (lambda _msg: None)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    device = default_device(device)
    if model is None or scheduler is None:
        from dipprior.diffusion import load_pretrained

        model, scheduler = load_pretrained(device=device)
    dip = DIPConfig(iterations=config.dip_iterations, channels=config.dip_channels,
                    device=device, progress=progress)
    run = {"device": device, "progress": progress}
    images = {name: sample_image(name, size=config.size) for name in config.images}
    tables: dict[str, ResultsTable] = {}
    task_images: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    all_rows: list[dict[str, Any]] = []
    for task in config.tasks:
        methods = methods_of(task, model, scheduler, config, dip, run)
        panels: dict[str, dict[str, torch.Tensor]] = {}
        rows: list[dict[str, Any]] = []

        def keep(case: Case, method: str, image: torch.Tensor, row: Mapping[str, Any],
                 panels: dict = panels, rows: list = rows, first: str = next(iter(methods)),
                 task: str = task) -> None:
            if method == first:
                say(f"[{case.index + 1}/{len(images)}] {case.name}: {_task_label(config, task)}, "
                    f"{config.size}x{config.size}")
                panels[case.name] = {"Ground truth": case.clean, "Degraded": _display_observation(
                    case.observation, case.operator, case.clean.shape)}
            panels[case.name][method] = image.clamp(0, 1)
            rows.append(dict(row))
            say(f"    {method:<28} PSNR {row['psnr']:6.2f} dB  NFE {row['NFE']:4d}  "
                f"{row['Seconds']:6.1f} s" + (f"  (t0={row['t0']})" if row.get("t0") else ""))

        compare(images, make_task(task, **task_params(config)), methods, seed=config.seed,
                on_result=keep, progress=False)
        tables[task] = results_table(rows, COLUMNS)
        task_images[task] = panels
        all_rows += [{"Task": task, **r} for r in tables[task].rows]  # with its averages
    result = DemoResult(table=results_table(all_rows, DEMO_COLUMNS, average=False),
                        config=config,
                        tables=tables, images=task_images)
    text = _report(result, config, device)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.csv = out / "results.csv"
        result.table.to_csv(result.csv)
        _write_figures(result, config, out)
        result.image_files = [path for task, panels in result.images.items()
                              for path in _save_images(panels, out / "images" / task)]
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
        say(f"Wrote {', '.join(str(f) for f in result.figures)}, {result.csv}, "
            f"{result.markdown} and {len(result.image_files)} restored images in "
            f"{out / 'images'}.")
    return result


def _write_figures(result: DemoResult, config: DemoConfig, out: Path) -> None:
    """``demo.png``: the hole tasks together (or the first task); ``demo_<task>.png`` for each
    other task.  A panel row is an image under one task."""
    groups: list[tuple[str, tuple[str, ...]]] = []
    holes = tuple(t for t in config.tasks if t in HOLES)
    rest = [t for t in config.tasks if t not in holes]
    if holes:
        groups.append(("demo.png", holes))
    groups += [("demo.png" if not groups and i == 0 else f"demo_{t}.png", (t,))
               for i, t in enumerate(rest)]
    for filename, tasks in groups:
        panels, psnr = {}, {}
        for task in tasks:
            for name, columns in result.images[task].items():
                key = f"{name}, {_short_label(config, task)}" if len(tasks) > 1 else name
                panels[key] = dict(columns)
                psnr.update({(key, r["Method"]): r["PSNR"]
                             for r in result.tables[task].rows
                             if r["Image"] == name})
                if columns["Degraded"].shape == columns["Ground truth"].shape:  # comparable
                    psnr[(key, "Degraded")] = float(psnr_of(columns["Degraded"],
                                                            columns["Ground truth"]))
        title = "; ".join(_task_label(config, t) for t in tasks)
        result.figures.append(save_figure(panels, psnr, out / filename,
                                          title=f"{title}; tuned presets"))
    result.figure = result.figures[0]


def _save_images(panels: Mapping[str, Mapping[str, torch.Tensor]], folder: Path) -> list[Path]:
    """Every method's restored image as ``<image>_<method>.png`` (atomic each)."""
    from dipprior.io import save_image

    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(image, folder / f"{_file_stem(name)}_{_file_stem(method)}.png")
            for name, images in panels.items() for method, image in images.items()
            if method not in ("Ground truth", "Degraded")]


# ----------------------------------------------------------------------------- report


def _short_label(config: DemoConfig, task: str) -> str:
    return REGISTRY[task].describe(task_params(config))


def _task_label(config: DemoConfig, task: str) -> str:
    return REGISTRY[task].describe(task_params(config), long=True)


def _report(result: DemoResult, config: DemoConfig, device: Any) -> str:
    settings = {k: v for k, v in dataclasses.asdict(config).items()}
    lines = ["# dipprior demo", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + f", "
             f"device={device}.", "",
             "Seconds of DIP->DDPM include its DIP fit (shared with DIP alone). NFE counts "
             "diffusion-model evaluations. DiffPIR (noise) is the prior from pure noise; "
             "(default) marks what DIPInitializedSampler(model, scheduler) runs.", ""]
    columns = ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE", "Seconds"]
    for task, table in result.tables.items():
        lines += [f"# {_task_label(config, task)}", ""]
        methods = list(dict.fromkeys(r["Method"] for r in table.rows))
        for method in methods:
            rows = [{k: v for k, v in row.items() if k != "Method"} for row in table.rows
                    if row.get("Method") == method and row["Image"] != "Average"]
            lines += [f"## {method}", "", results_table(rows, columns).to_markdown(), ""]
        averages = [{"Image": row["Method"], **{k: v for k, v in row.items()
                                                 if k not in ("Image", "Method")}}
                    for row in table.rows if row["Image"] == "Average"]
        lines += ["## Averages (Image = method)", "",
                  results_table(averages, columns, average=False).to_markdown(), ""]
    return "\n".join(lines)
