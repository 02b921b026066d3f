"""``load_pretrained``: a shipped prior by name, a dipprior checkpoint, a diffusers folder or a
guided-diffusion (ADM) ``.pt`` file.

It sits above :mod:`~dipprior.diffusion.checkpoint` and :mod:`~dipprior.diffusion.adapters`,
which know nothing of each other's callers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dipprior._atomic import readable_folder
from dipprior.diffusion.adapters import is_diffusers_folder, load_diffusers
from dipprior.diffusion.adm_checkpoint import ADM_PRESETS, load_adm
from dipprior.diffusion.checkpoint import (
    CONFIG_FILE,
    DEFAULT_PRETRAINED,
    FORMAT,
    available_pretrained,
    load,
    read_json,
    weights_root,
)
from dipprior.diffusion.precision import Precision
from dipprior.diffusion.scheduler import Scheduler

__all__ = ["load_pretrained"]


def load_pretrained(name_or_path: str | os.PathLike | None = None, *,
                    device: str | torch.device | None = None,
                    root: str | os.PathLike | None = None, preset: str | None = None,
                    dtype: Precision | torch.dtype = "float32",
                    **adm_flags: Any) -> tuple[torch.nn.Module, Scheduler]:
    """Load a prior -> ``(model, scheduler)`` in eval mode on ``device``, offline.

    ``name_or_path`` is

    * ``None`` or a shipped prior's name (see :func:`available_pretrained`): ``None`` picks
      :data:`DEFAULT_PRETRAINED` (``"cbsd432-small"``) when installed, else the only installed
      prior, or the one called ``"default"``; ``root`` overrides the registry folder (default:
      the package's ``weights`` folder);
    * a dipprior checkpoint folder (``config.json`` with ``"format": "dipprior.diffusion"``,
      read by :func:`load`);
    * a diffusers folder: a pipeline (``model_index.json``, ``unet/`` with ``config.json`` and
      ``diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``) or a bare
      ``UNet2DModel`` folder, read by :func:`dipprior.diffusion.adapters.load_diffusers` (the
      UNet wrapped so that ``model(x, t)`` returns a tensor; the scheduler config mapped, or a
      ``ValueError`` naming a setting dipprior cannot honour; needs ``diffusers``).

    ``dtype`` (:mod:`~dipprior.diffusion.precision`): ``"float32"`` (default, the same numbers
    on every machine), ``"bfloat16"``/``"float16"`` (the network's torso under autocast) or
    ``"auto"`` (bfloat16 where the device runs it natively).

    A string that is a shipped name is the shipped prior (write ``./name`` for a folder of the
    same name); a ``Path`` is always a folder.  Nothing is downloaded: a string that is neither
    a shipped name nor an existing folder raises ``ValueError`` listing the shipped names.
    """
    names = available_pretrained(root)
    if name_or_path is None:
        if DEFAULT_PRETRAINED in names:
            name_or_path = DEFAULT_PRETRAINED
        elif len(names) == 1:
            name_or_path = names[0]
        elif "default" in names:
            name_or_path = "default"
        else:
            raise ValueError(
                "load_pretrained() needs a name: available pretrained priors: "
                f"{names or '(none installed)'}; train one with `dipprior train`")
    if isinstance(name_or_path, str) and name_or_path in ADM_PRESETS:
        info = ADM_PRESETS[name_or_path]
        raise ValueError(f"{name_or_path!r} is an architecture, its weights are not shipped and "
                         f"nothing is downloaded: get {info['file']} from {info['source']} and "
                         f"pass its path")
    adm_file = (isinstance(name_or_path, (str, os.PathLike))
                and Path(name_or_path).suffix.lower() in (".pt", ".pth"))
    if adm_file and not Path(name_or_path).expanduser().is_file():
        raise ValueError(f"checkpoint file {str(name_or_path)!r} does not exist")
    if (preset is not None or adm_flags) and not adm_file:
        raise TypeError(f"load_pretrained: preset= and ADM flags {sorted(adm_flags)} apply to "
                        "guided-diffusion .pt/.pth files only")
    if adm_file:
        return load_adm(Path(name_or_path).expanduser(), preset=preset, device=device,
                        dtype=dtype, **adm_flags)
    if isinstance(name_or_path, str) and name_or_path in names:
        base = weights_root() if root is None else Path(root)
        return load(base / name_or_path, device=device, dtype=dtype)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_pretrained: expected a name or a folder, got "
                        f"{type(name_or_path).__name__}")
    folder = Path(name_or_path).expanduser()
    folder = readable_folder(folder)  # a dipprior checkpoint a crash left aside mid-swap
    if not folder.is_dir():
        raise ValueError(f"unknown pretrained prior {str(name_or_path)!r} (neither a folder nor "
                         f"a .pt/.pth file); "
                         f"available: {names or '(none installed)'}")
    return _load_folder(folder, device, dtype)


def _load_folder(folder: Path, device: str | torch.device | None,
                 dtype: Precision | torch.dtype) -> tuple[torch.nn.Module, Scheduler]:
    """A dipprior checkpoint or a diffusers folder -> ``(model, scheduler)``."""
    config_file = folder / CONFIG_FILE
    if config_file.is_file() and read_json(config_file).get("format") == FORMAT:
        return load(folder, device=device, dtype=dtype)
    if is_diffusers_folder(folder):
        return load_diffusers(folder, device=device, dtype=dtype)
    raise ValueError(
        f"{folder} is neither a dipprior checkpoint ({CONFIG_FILE} with \"format\": "
        f"\"{FORMAT}\") nor a diffusers folder (model_index.json with unet/ and scheduler/, or "
        "config.json with \"_class_name\": \"UNet2DModel\")")
