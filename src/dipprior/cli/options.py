"""Options shared by the sub-commands, and the objects they become (one place each)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from dipprior.diffusion.ensemble import ENSEMBLES
from dipprior.diffusion.scheduler import SPACINGS
from dipprior.dip.config import EARLY_STOPPING
from dipprior.pipeline.config import ERROR_ESTIMATES, RENOISE, SamplerConfig, parse_t0


class HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option that has a real default (not None/flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool) \
                or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)



def add_runtime(p: argparse.ArgumentParser) -> None:
    """``--threads``, ``--device`` and ``--no-progress``."""
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_task(p: argparse.ArgumentParser, required: bool = True, real_images: bool = False
             ) -> None:
    """``--task`` and the parameters of every registered task (``operators.TASKS``), one option
    per parameter name; tasks that share an option (``--sigma``) each keep their own default.
    ``real_images``: the command also restores real observations, whose noise level is
    estimated when not given."""
    from dipprior.operators import TASKS

    p.add_argument("--task", required=required, choices=list(TASKS),
                   help="the degradation: " + "; ".join(f"{t.name}: {t.title}"
                                                        for t in TASKS.values()),
                   **({} if required else {"default": "denoise"}))
    by_flag: dict[str, list[tuple[str, Any]]] = {}
    for task in TASKS.values():
        for param in task.params:
            by_flag.setdefault(param.flag, []).append((task.name, param))
    for flag, uses in by_flag.items():
        helps = []
        for name, param in uses:
            text = param.help if real_images or not param.estimate else \
                param.help.split("; for a real image")[0]
            default = "" if param.default is None else f" (default {param.default})"
            helps.append(f"{name}: {text}{default}")
        p.add_argument(flag, type=uses[0][1].type, dest=_dest(flag), default=None,
                       help="; ".join(helps))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def task_params(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen task's parameters as given on the command line (None: not given); an option
    of another task is refused (it would be silently ignored)."""
    from dipprior.operators.registry import TASKS, get_task

    task = get_task(args.task)
    own = {param.flag for param in task.params}
    for other in TASKS.values():
        for param in other.params:
            if param.flag not in own and getattr(args, _dest(param.flag), None) is not None:
                raise ValueError(f"{param.flag}: not an option of --task {task.name} (it is "
                                 f"{other.name}'s); leave it out")
    return {param.name: getattr(args, _dest(param.flag), None) for param in task.params}


def in_user_terms(exc: Exception, task: Any) -> ValueError:
    """A task's error with its parameter named as the option the user typed (``--sigma``)."""
    text = str(exc)
    for param in task.params:
        if text.startswith(param.name + ":"):
            return ValueError(param.flag + text[len(param.name):])
    return ValueError(text)


def check_output_folder(path: str | None, option: str = "--out") -> None:
    """A folder the command will write into: a folder or nothing yet, under a writable parent;
    checked before any work, so a long run does not fail at its end."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option}: {path!r} exists and is not a folder")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: cannot write into {path!r} ({str(existing)!r} is not a "
                         "writable folder)")


def add_sampler(p: argparse.ArgumentParser) -> None:
    """The fields of :class:`~dipprior.pipeline.SamplerConfig` (and ``--model``): left out,
    each keeps the task's tuned preset; given, it refines that preset (keyword settings of
    the sampler, :mod:`dipprior.pipeline.plan`)."""
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="diffusion prior: a shipped prior's name, a checkpoint folder (from "
                   "`dipprior train`), a diffusers DDPM folder or a guided-diffusion (ADM) "
                   ".pt file such as ffhq_10m.pt; default: the shipped prior")
    add_dtype(p)
    p.add_argument("--steps", type=int,
                   help="most reverse steps (= NFE); default: the task's preset")
    p.add_argument("--t0", help="start timestep: int, strength in (0, 1] (e.g. 0.05) or auto")
    p.add_argument("--eta", type=float, help="DDIM eta")
    p.add_argument("--zeta", type=float,
                   help="DiffPIR fresh-noise fraction in [0, 1] (instead of --eta)")
    p.add_argument("--spacing", choices=SPACINGS,
                   help="timestep spacing of the reverse chain (quadratic: DiffPIR's 'quad')")
    p.add_argument("--lam", type=float,
                   help="DiffPIR lambda, official code's scale: rho_t = lam sigma_n^2 / sigma_t^2 "
                   "(deepinv's lambda_ = lam / 2; the old guidance_scale is lam / 4)")
    p.add_argument("--renoise", choices=RENOISE,
                   help="DIP start: add the full forward noise of t0, or only what the DIP "
                   "image's estimated error leaves missing (auto: missing for noisy "
                   "observations)")
    p.add_argument("--error-estimate", choices=ERROR_ESTIMATES,
                   help="how the DIP image's error is estimated (reference: distance to the "
                   "prior's own restoration)")
    p.add_argument("--dip-observation", action="store_true", default=None,
                   help="use the DIP image as a second observation in every data step")
    p.add_argument("--samples", type=int,
                   help="chains per image from the same start, averaged (the posterior mean)")
    p.add_argument("--ensemble", type=int, choices=ENSEMBLES,
                   help="average the prior over this many flips and quarter turns of its input "
                   "at every step (geometric self-ensemble; costs as many model evaluations)")
    p.add_argument("--adapt", type=int, metavar="ITERATIONS",
                   help="adapt the prior to each image while it samples (LoRA, DDIP-style): "
                   "optimiser steps per reverse step (denoising: recorrupted-to-recorrupted "
                   "loss; else measurement consistency); compare: every diffusion method; "
                   "default: no adaptation")
    p.add_argument("--adapt-lr", type=float, metavar="LR",
                   help="learning rate of --adapt (default: AdaptConfig's)")


def add_dip(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dip-iterations", type=int,
                   help="DIP budget (default: the task's default DIP stage)")
    p.add_argument("--dip-channels", type=int, help="DIP channels per scale (default 64)")
    p.add_argument("--early-stopping", choices=[rule for rule in EARLY_STOPPING if rule],
                   help="DIP early stopping rule (reference: stopped by the prior's "
                   "restoration; default: the task's default DIP stage)")


def sampler_fields(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    """The :class:`SamplerConfig` fields given as options (and ``fields`` with a value),
    parsed and checked: keyword settings for the sampler."""
    names = [f.name for f in dataclasses.fields(SamplerConfig)]
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    given |= {k: v for k, v in fields.items() if v is not None}
    if getattr(args, "adapt_lr", None) is not None and "adapt" not in given:
        raise ValueError("--adapt-lr: needs --adapt ITERATIONS")
    if "t0" in given:
        given["t0"] = parse_t0(given["t0"])
    if "adapt" in given:
        given["adapt"] = adapt_config(given["adapt"], getattr(args, "adapt_lr", None))
    SamplerConfig().replace(**{k: v for k, v in given.items()
                               if not (k == "eta" and "zeta" in given)})  # each field valid
    return given


def adapt_config(iterations: int, lr: float | None) -> Any:
    """``--adapt ITERATIONS [--adapt-lr LR]`` as an :class:`~dipprior.pipeline.adapt.AdaptConfig`
    (errors name the option)."""
    from dipprior.pipeline.adapt import AdaptConfig

    try:
        return AdaptConfig(iterations=iterations, **({} if lr is None else {"lr": lr}))
    except ValueError as exc:
        option = "--adapt-lr" if str(exc).startswith("lr") else "--adapt"
        raise ValueError(f"{option}: {exc}") from None


def add_dtype(p: argparse.ArgumentParser) -> None:
    """``--dtype``: the prior's precision (:mod:`dipprior.diffusion.precision`)."""
    from dipprior.diffusion.precision import PRECISIONS

    p.add_argument("--dtype", choices=PRECISIONS, default="float32",
                   help="the prior's precision: float32 (default, the same numbers on every "
                   "machine), bfloat16/float16 (autocast; faster where native) or auto "
                   "(bfloat16 where the device runs it natively)")


def load_prior(args: argparse.Namespace) -> tuple[Any, Any]:
    """``--model`` (a shipped prior's name, a dipprior checkpoint folder, a diffusers folder or
    a guided-diffusion ``.pt`` file) or the shipped prior, on ``--device``."""
    from dipprior._tensor import default_device
    from dipprior.diffusion import load_pretrained

    device = default_device(args.device)
    dtype = getattr(args, "dtype", "float32")
    if args.model:
        return load_pretrained(args.model, device=device, dtype=dtype)
    try:
        return load_pretrained(device=device, dtype=dtype)
    except ValueError as exc:
        raise ValueError(f"--model DIR is required: no usable pretrained prior ({exc})"
                         ) from None


def parse_budget(args: argparse.Namespace) -> float | str | None:
    """``restore --budget``: seconds (a number) or an effort name, checked before any work."""
    from dipprior.pipeline.presets import EFFORTS

    if args.budget is None:
        return None
    try:
        budget: float | str = float(args.budget)
    except ValueError:
        budget = args.budget
        if budget not in EFFORTS:
            raise ValueError(f"--budget: expected seconds or one of {', '.join(EFFORTS)}, got "
                             f"{args.budget!r}") from None
    if isinstance(budget, float) and not 0 < budget < float("inf"):
        raise ValueError(f"--budget: expected seconds > 0, got {args.budget!r}")
    return budget


def check_output(path: str, flag: str) -> None:
    """Fail before any work when an output path cannot be written."""
    out = Path(path)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{flag}: {path!r} must end in .png, .jpg or .jpeg")
    if not out.parent.is_dir():
        raise ValueError(f"{flag}: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise ValueError(f"{flag}: {path!r} is a folder")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"{flag}: {path!r} is not writable")
