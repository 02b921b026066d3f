"""Safe checkpoints: safetensors weights plus JSON, written atomically, never unpickled.

A checkpoint directory holds

* ``config.json`` -- ``{"format", "format_version", "model_class", "model", "scheduler", ...}``
* ``model.safetensors`` -- the (EMA) weights used for sampling,

and, when written by :func:`dipprior.diffusion.train`, also

* ``training_state.safetensors`` -- everything needed to resume: raw weights (``model.*``), EMA
  weights (``ema.*``), optimizer tensors (``optim.*``), RNG states (``rng.*``) and the loss history
  (``loss_history``); its JSON header metadata (key ``"state"``) holds the step, optimizer
  hyper-parameters and the training arguments.  One file, so it is replaced atomically as a whole.
* ``loss_history.csv`` -- ``step,loss`` for plotting.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dipprior._atomic import atomic_folder, atomic_write_bytes, readable_folder
from dipprior._tensor import default_device
from dipprior.diffusion.adm import ADMUNet
from dipprior.diffusion.precision import Precision, set_precision
from dipprior.diffusion.scheduler import Scheduler
from dipprior.diffusion.unet import UNet

__all__ = ["save", "load", "available_pretrained", "is_checkpoint"]

FORMAT = "dipprior.diffusion"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
LOSS_FILE = "loss_history.csv"
# the prior load_pretrained() picks when no name is given (shipped in dipprior/weights)
DEFAULT_PRETRAINED = "cbsd432-small"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` (moved to CPU, made contiguous) as safetensors."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(cpu, metadata=metadata))


def _unreadable(path: Path) -> PermissionError:
    return PermissionError(f"checkpoint file {path} is not readable (permission denied)")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a missing, truncated or corrupt file raises ``ValueError``."""
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise _unreadable(path) from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__", {}) or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"checkpoint file {path} is truncated or corrupt ({exc})") from None
    return tensors, metadata


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read from its header only."""
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except PermissionError:
        raise _unreadable(path) from None
    with f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < size <= min(100 * 2**20, path.stat().st_size - 8):
            raise ValueError(f"checkpoint file {path} is truncated or corrupt (bad header)")
        try:
            header = json.loads(f.read(size))
            return {k: (v["dtype"], tuple(int(n) for n in v["shape"]))
                    for k, v in header.items() if k != "__metadata__"}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"checkpoint file {path} is truncated or corrupt ({exc})") from None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        obj = json.loads(path.read_text())
    except PermissionError:
        raise _unreadable(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return obj


# ------------------------------------------------------------- model configs
def model_config(model: torch.nn.Module) -> dict[str, Any]:
    if not isinstance(model, (UNet, ADMUNet)):
        raise TypeError(f"model must be a dipprior UNet or ADMUNet, got {type(model).__name__}")
    return dict(model.config)


def checkpoint_config(model: torch.nn.Module, scheduler: Scheduler,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"scheduler must be a Scheduler, got {type(scheduler).__name__}")
    from dipprior import __version__

    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "model_class": type(model).__name__, "model": model_config(model),
              "scheduler": scheduler.to_config(), "dipprior_version": __version__}
    config.update(extra or {})
    return config


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                    *, assign: bool = False) -> None:
    """``load_state_dict`` with a ``ValueError`` naming missing, unexpected and mis-shaped keys
    (``assign=True``: the tensors become the parameters, e.g. into a model on the meta device)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs expected {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
        raise ValueError(f"weights in {source} do not match the model config: "
                         + "; ".join(parts))
    model.load_state_dict(state, assign=assign)


def assign_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str,
                   *, copy: bool = True) -> None:
    """Finite weights, cast to the model's own dtypes (float32; integer and bool tensors too, as
    ``load_state_dict`` used to copy them; copies unless ``copy=False``: never keep views of a
    memory-mapped file), become the parameters of ``model`` (built on the meta device); a
    ``ValueError`` names the bad keys."""
    def names(keys: list[str]) -> str:
        return f"{', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"

    complex_ = [k for k, v in tensors.items() if v.is_complex()]
    if complex_:
        raise ValueError(f"weights in {source} hold complex tensors ({names(complex_)}); "
                         "expected real numbers")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"weights in {source} contain NaN or inf ({names(bad)})")
    own = model.state_dict()
    load_state_into(model, {k: v.to(own[k].dtype if k in own else torch.float32, copy=copy)
                            for k, v in tensors.items()}, source, assign=True)


# ---------------------------------------------------------------- save / load
def save(model: torch.nn.Module, scheduler: Scheduler, directory: str | os.PathLike,
         *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`UNet` or :class:`ADMUNet`) and ``scheduler`` to ``directory``.

    Writes ``model.safetensors`` and ``config.json`` as one unit: the folder is assembled next
    to ``directory`` and swapped in whole, so an interrupted save leaves the previous checkpoint
    loadable; other files in ``directory`` are kept.  ``metadata`` adds JSON-able entries to
    ``config.json`` (checked before anything is written).  Returns the directory.

    >>> save(UNet(base_channels=8), Scheduler(), "/tmp/prior")  # doctest: +SKIP
    """
    directory = Path(directory)
    files = checkpoint_files(model, scheduler, metadata)
    with atomic_folder(directory) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return directory


def checkpoint_files(model: torch.nn.Module, scheduler: Scheduler,
                     metadata: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The bytes of ``config.json`` and ``model.safetensors`` (any error before any write)."""
    config = checkpoint_config(model, scheduler, metadata)
    try:
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata: must be JSON-serialisable ({exc})") from None
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return {WEIGHTS_FILE: st_save(weights, metadata={"format": "pt"}),
            CONFIG_FILE: text.encode()}


def _check_against_weights(config: dict[str, Any], weights: Path, source: Path) -> None:
    """Build the model on the meta device (no memory) and compare its tensors with the weights'
    header, so a config that does not fit -- or asks for an absurd model -- fails before any
    allocation."""
    with torch.device("meta"):
        meta = _model_from_config(config, source)
    header = read_header(weights)
    own = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    if own != {k: shape for k, (_, shape) in header.items()}:
        parts = {"missing keys": sorted(set(own) - set(header)),
                 "unexpected keys": sorted(set(header) - set(own)),
                 "wrong shapes": [f"{k}: {header[k][1]} vs expected {own[k]}" for k in own
                                  if k in header and own[k] != header[k][1]]}
        raise ValueError(f"weights in {weights} do not match the model config in {source}: "
                         + "; ".join(f"{name} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                                     for name, keys in parts.items() if keys))


_MODEL_CLASSES: dict[str, type[UNet] | type[ADMUNet]] = {"UNet": UNet, "ADMUNet": ADMUNet}


def _model_from_config(config: dict[str, Any], source: Path) -> UNet | ADMUNet:
    if config.get("format") != FORMAT:
        raise ValueError(f"{source} is not a dipprior diffusion checkpoint "
                         f"(format={config.get('format')!r}, expected {FORMAT!r})")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{source} has an invalid format_version {version!r} (expected an int)")
    if version > FORMAT_VERSION:
        raise ValueError(f"{source} has format_version {config['format_version']}; this dipprior "
                         f"reads up to {FORMAT_VERSION} -- upgrade dipprior")
    model_class = _MODEL_CLASSES.get(config.get("model_class"))  # type: ignore[arg-type]
    if model_class is None or not isinstance(config.get("model"), dict):
        raise ValueError(f"{source} does not describe a UNet or ADMUNet model")
    try:
        return model_class(**config["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} has an invalid model config: {exc}") from None


def load(directory: str | os.PathLike, device: str | torch.device | None = None, *,
         dtype: Precision | torch.dtype = "float32") -> tuple[UNet | ADMUNet, Scheduler]:
    """Read a checkpoint written by :func:`save` or by ``train`` -> ``(model, scheduler)``.

    The model is returned in eval mode on ``device`` (``None``: CUDA if available, else CPU),
    running in ``dtype`` (:mod:`~dipprior.diffusion.precision`; float32 by default).
    A missing directory or file, a truncated or corrupt file, or weights that do not match the
    config raise ``ValueError``.  Works on a checkpoint directory that training is still writing.
    """
    directory = readable_folder(directory)  # a folder a crash left aside mid-swap is read
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory {directory} does not exist")
    source = directory / CONFIG_FILE
    config = read_json(source)
    if not isinstance(config.get("scheduler"), dict):
        raise ValueError(f"{source} has no scheduler config (key 'scheduler'); a checkpoint "
                         "without one would silently get the default schedule")
    try:
        scheduler = Scheduler.from_config(config["scheduler"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} has an invalid scheduler config: {exc}") from None
    _check_against_weights(config, directory / WEIGHTS_FILE, source)
    dev = default_device(device)
    with torch.device("meta"):  # the weights replace the parameters: no random init
        model = _model_from_config(config, source)
    tensors, _ = read_tensors(directory / WEIGHTS_FILE)
    assign_weights(model, tensors, str(directory / WEIGHTS_FILE), copy=False)  # fresh tensors
    set_precision(model, dtype, dev)
    return model.to(dev).eval(), scheduler


def is_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a resumable training state."""
    return (Path(directory) / STATE_FILE).is_file()


# ------------------------------------------------------------------ registry
def weights_root() -> Path:
    """The package's ``weights`` folder (where :func:`load_pretrained` looks)."""
    return Path(str(resources.files("dipprior") / "weights"))


def available_pretrained(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the pretrained priors shipped in ``dipprior/weights`` (or under ``root``)."""
    root = weights_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")  # temp folders
                  and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file())
