"""The tasks by name: what ``--task``, the experiments, the presets and the demo read.

Each operator module registers its tasks (:func:`register`); a task is a name, the parameters a
user gives it (which become the command line's options) and ``make``, which turns them into an
operator -- or, where every image gets its own (a random mask, a random camera shake), into a
factory ``(image, generator) -> operator``.  Adding a task is its operator, its registry entry
beside it and, where the defaults do not serve, its tuned settings (``pipeline.presets``).

>>> sorted(TASKS)[:2]
['box', 'deblur']
>>> make_task("sr", factor=2)
SuperResolution(factor=2, kernel='bicubic', noise_sigma=0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "Task", "TASKS", "register", "get_task", "make_task", "operator_for",
           "noise_level", "OperatorFactory"]

#: ``(image, generator) -> operator``: a fresh operator per image (a random mask)
OperatorFactory = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Param:
    """One parameter of a task: its keyword in :func:`make_task`, its default and its help.

    ``option`` is its command-line option (default ``--name``); tasks may share one option
    (``--sigma`` is every task's noise level), each with its own default.  ``estimate``: for a
    real observation left without it, the command line estimates it from the image (a noise
    level, in the parameter's units).
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    option: str | None = None
    estimate: bool = False

    @property
    def flag(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Task:
    """A named degradation: ``make(real=..., **params)`` -> an operator or a factory.

    ``make`` receives every parameter (defaults filled) and ``real``: whether the operator is
    for a real observation (``restore IMAGE``) rather than for degrading a clean image; a task
    that needs something only a user has (a mask) or that only simulates (a centred box) says
    so with a ``ValueError`` naming the option.  ``label(params)`` is the short name of the
    setting in tables (``"50% missing"``), ``heading(params)`` its long one.
    """

    name: str
    title: str
    make: Callable[..., Any]
    params: tuple[Param, ...] = ()
    label: Callable[[Mapping[str, Any]], str] | None = None
    heading: Callable[[Mapping[str, Any]], str] | None = None

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def describe(self, params: Mapping[str, Any] | None = None, long: bool = False) -> str:
        """The setting's name in tables (``long``: as a heading)."""
        values = {**self.defaults(), **{k: v for k, v in (params or {}).items()
                                         if k in self.defaults()}}
        short = self.label(values) if self.label is not None else self.name
        if not long:
            return short
        return self.heading(values) if self.heading is not None else f"{self.title} {short}"


#: every registered task by name
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` (a name taken by another task is refused)."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"task: {task.name!r} is registered already")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called ``name`` (``ValueError`` listing the names otherwise)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def all_params() -> dict[str, Param]:
    """Every task's parameters by name (the first registration of a shared name)."""
    out: dict[str, Param] = {}
    for task in TASKS.values():
        for param in task.params:
            out.setdefault(param.name, param)
    return out


def make_task(name: str, *, real: bool = False, **params: Any) -> Any:
    """The operator (or per-image factory) of task ``name`` with ``params``.

    Parameters of other tasks are accepted and ignored, so one set of options serves every
    task (``make_task(task, sigma=25, keep=0.5, factor=4)``); a name no task knows is a
    ``TypeError``; ``None`` keeps a parameter's default.
    """
    task = get_task(name)
    unknown = sorted(set(params) - set(all_params()))
    if unknown:
        raise TypeError(f"make_task: unknown parameters {unknown}; the tasks take "
                        f"{sorted(all_params())}")
    values = task.defaults()
    values.update({k: v for k, v in params.items() if k in values and v is not None})
    return task.make(real=real, **values)


def operator_for(name: str, image: Any, *, seed: int = 0, real: bool = False,
                 **params: Any) -> Any:
    """Task ``name``'s operator for ``image`` (C, H, W): :func:`make_task`'s operator, or its
    per-image factory's draw for ``image`` from ``seed``."""
    import torch

    source = make_task(name, real=real, **params)
    if hasattr(source, "proximal"):  # operators are callable too: tell them apart
        return source
    return source(image, torch.Generator().manual_seed(seed))


def noise_level(value: float, name: str) -> float:
    """A task parameter's noise std in 0..255 (8-bit pixel units) -> on the [0, 1] scale,
    refused outside 0..255 in the user's units."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 255:
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name}: expected a noise std in 0..255 (8-bit pixel units), got "
                         f"{shown}")
    return float(value) / 255.0
