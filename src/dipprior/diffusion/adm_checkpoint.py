"""guided-diffusion (ADM) ``.pt`` checkpoints: read without unpickling code, infer the model.

A ``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)`` (memory-mapped where the
file allows), so a file holding code is refused and nothing in it runs.  The architecture is
inferred from the tensor shapes; the attention heads do not show in the weights and come from a
named preset (:data:`ADM_PRESETS`), recognised automatically when the shapes match one, or from
keyword arguments.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from dipprior.diffusion.adm import ADMUNet
from dipprior.diffusion.precision import Precision, set_precision
from dipprior.diffusion.scheduler import Scheduler

__all__ = ["ADM_PRESETS", "adm_unet", "read_state_dict", "infer_adm_config", "load_adm"]

# The two priors the inverse-problem papers run (guided-diffusion's README flags; DPS's
# configs/model_config.yaml).  Both: linear betas 1e-4..0.02, T = 1000, epsilon + learned sigma.
ADM_PRESETS: dict[str, dict[str, Any]] = {
    "adm-imagenet256-uncond": {
        "file": "256x256_diffusion_uncond.pt",
        "source": "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
                  "256x256_diffusion_uncond.pt (openai/guided-diffusion README)",
        "parameters": 552_814_086,
        "model": {"model_channels": 256, "num_res_blocks": 2,
                  "channel_mult": (1, 1, 2, 2, 4, 4), "attention_ds": (8, 16, 32),
                  "num_heads": 4, "num_head_channels": 64, "use_scale_shift_norm": True,
                  "resblock_updown": True, "out_channels": 6},
    },
    "adm-ffhq256": {
        "file": "ffhq_10m.pt",
        "source": "the DPS authors' release (github.com/DPS2022/diffusion-posterior-sampling "
                  "README, 'ffhq_10m.pt'; deepinv ships it as diffusion_ffhq_10m.pt)",
        "parameters": 93_563_910,
        "model": {"model_channels": 128, "num_res_blocks": 1,
                  "channel_mult": (1, 1, 2, 2, 4, 4), "attention_ds": (16,),
                  "num_heads": 4, "num_head_channels": 64, "use_scale_shift_norm": True,
                  "resblock_updown": True, "out_channels": 6},
    },
}
# flags that leave no trace in the weights' shapes
_SHAPELESS = ("num_heads", "num_head_channels", "num_heads_upsample",
              "use_new_attention_order", "dropout")
_FLAGS = set(inspect.signature(ADMUNet.__init__).parameters) - {"self"}
_WRAPPERS = ("state_dict", "model", "ema", "model_ema")


def adm_unet(preset: str, **overrides: Any) -> ADMUNet:
    """A randomly initialised :class:`ADMUNet` of a named preset (``overrides`` replace flags).

    >>> with torch.device("meta"):
    ...     net = adm_unet("adm-ffhq256")
    >>> sum(p.numel() for p in net.parameters())
    93563910
    """
    return ADMUNet(**{**_preset(preset)["model"], **overrides})


def _preset(name: str) -> dict[str, Any]:
    if name not in ADM_PRESETS:
        raise ValueError(f"preset: unknown ADM preset {name!r}; known: {sorted(ADM_PRESETS)}")
    return ADM_PRESETS[name]


def adm_scheduler() -> Scheduler:
    """guided-diffusion's schedule: linear betas 1e-4..0.02 over 1000 steps, epsilon."""
    return Scheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                     beta_end=0.02, prediction_type="epsilon")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch ``.pt``/``.pth`` state_dict, read without running any code.

    Accepts a bare state_dict or one wrapped under ``state_dict``/``model``/``ema``/``model_ema``
    (refused when several are present: which to sample with is the user's call), and strips
    DataParallel's ``module.`` prefix.  A file that would need code to unpickle, or that holds
    anything but tensors, raises ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} does not exist")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc))
        if found:
            raise ValueError(f"{path}: refused, it holds code ({found.group(1)}), not only "
                             "tensors; loading it would run that code, and nothing was run"
                             ) from None
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (not a tensor pickle)"
                         ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [k for k in _WRAPPERS if isinstance(obj.get(k), dict)]
        if len(inner) > 1:
            raise ValueError(f"{path}: holds several state_dicts ({', '.join(inner)}); save the "
                             "one to sample with (usually the EMA weights) on its own")
        if inner:
            obj = obj[inner[0]]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), got "
                         f"{type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _sublayers(state: dict[str, torch.Tensor], prefix: str) -> dict[int, str]:
    """``{index: kind}`` of the layers in one ``TimestepEmbedSequential`` block."""
    kinds: dict[int, str] = {}
    for key in state:
        m = re.match(re.escape(prefix) + r"\.(\d+)\.(\w+)", key)
        if m:
            j, name = int(m.group(1)), m.group(2)
            kind = {"in_layers": "res", "qkv": "attn", "conv": "upconv", "op": "downconv",
                    "weight": "conv"}.get(name)
            if kind and kinds.get(j) != "res":
                kinds[j] = kind
    return kinds


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def infer_adm_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The :class:`ADMUNet` shape flags of a guided-diffusion state_dict (heads excluded).

    Raises ``ValueError`` for a class-conditional model (``label_emb``) or a layout that is not
    guided-diffusion's ``UNetModel``.
    """
    if "label_emb.weight" in state:
        raise ValueError(
            f"a class-conditional model (label_emb: {state['label_emb.weight'].shape[0]} "
            "classes); dipprior's samplers are unconditional: use an unconditional checkpoint "
            "such as 256x256_diffusion_uncond.pt")
    need = ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight",
            "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.0.emb_layers.1.weight",
            "output_blocks.0.0.in_layers.0.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"not a guided-diffusion UNet state_dict: missing {missing}")
    try:
        return _infer(state)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"not a guided-diffusion UNet layout: no tensor {exc}") from None


def _infer(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    mc = state["time_embed.0.weight"].shape[1]
    in_ch = state["input_blocks.0.0.weight"].shape[1]
    out_ch = state["out.2.weight"].shape[0]
    n_out = _count(state, "output_blocks")
    blocks = [_sublayers(state, f"output_blocks.{i}") for i in range(n_out)]
    ups = [i for i, b in enumerate(blocks)
           if list(b.values()).count("res") > 1 or "upconv" in b.values()]
    n_in = _count(state, "input_blocks")
    # average-pool down-sampling has no parameters: its block leaves a gap in the indices
    pools = sorted(set(range(n_in)) - {int(k.split(".")[1]) for k in state
                                       if k.startswith("input_blocks.")})
    if ups:
        levels = len(ups) + 1
    elif pools:
        levels = n_out // pools[0]
    else:
        levels = 1
    if levels < 1:
        raise ValueError(f"not a guided-diffusion UNet layout ({n_in} input blocks, {n_out} "
                         "output blocks)")
    nrb = n_out // levels - 1
    downs = [k * (nrb + 1) for k in range(1, levels)]
    if (nrb < 1 or n_out != levels * (nrb + 1) or n_in != n_out
            or (ups and ups != [d - 1 for d in downs]) or (pools and pools != downs)):
        raise ValueError("not a guided-diffusion UNet layout (input/output blocks do not pair "
                         f"up: {n_in} in, {n_out} out)")
    mults: list[float] = []
    attention_ds: list[int] = []
    for level in range(levels):
        first = 1 + level * (nrb + 1)
        width = state[f"input_blocks.{first}.0.in_layers.2.weight"].shape[0]
        mults.append(width // mc if width % mc == 0 else width / mc)
        if "attn" in _sublayers(state, f"input_blocks.{first}").values():
            attention_ds.append(2 ** level)
    down = _sublayers(state, f"input_blocks.{nrb + 1}") if levels > 1 else {}
    emb = state["input_blocks.1.0.emb_layers.1.weight"].shape[0]
    return {"model_channels": mc, "num_res_blocks": nrb, "channel_mult": tuple(mults),
            "attention_ds": tuple(attention_ds), "in_channels": in_ch, "out_channels": out_ch,
            "use_scale_shift_norm": emb == 2 * int(mults[0] * mc),
            "resblock_updown": down.get(0) == "res",
            "conv_resample": levels == 1 or down.get(0) is not None}


def _matching_preset(config: dict[str, Any]) -> str | None:
    for name, preset in ADM_PRESETS.items():
        model = preset["model"]
        shape = {k: v for k, v in model.items() if k not in _SHAPELESS}
        if all(config.get(k) == v for k, v in shape.items()):
            return name
    return None


def load_adm(path: str | os.PathLike, *, preset: str | None = None,
             device: str | torch.device | None = None,
             dtype: Precision | torch.dtype = "float32", **overrides: Any
             ) -> tuple[ADMUNet, Scheduler]:
    """A guided-diffusion ``.pt`` checkpoint -> ``(ADMUNet in eval mode, Scheduler)``.

    The architecture comes from the tensor shapes; the attention heads from ``preset`` (a name
    in :data:`ADM_PRESETS`), else from the preset whose shapes match, else from ``overrides``
    (``num_head_channels=`` or ``num_heads=``, guided-diffusion's flags).  Missing, unexpected
    or mis-shaped keys, NaN/inf weights and class-conditional models raise ``ValueError``.

    ``dtype``: float32 by default; ``"bfloat16"`` runs the torso under bf16 autocast as
    guided-diffusion's ``use_fp16`` (``"auto"``: where the device has native bf16), see
    :mod:`~dipprior.diffusion.precision`.  The weights stay float32.
    """
    from dipprior._tensor import default_device
    from dipprior.diffusion.checkpoint import assign_weights

    unknown = sorted(set(overrides) - _FLAGS)
    if unknown:
        raise TypeError(f"load_adm: unknown ADMUNet flags {unknown}; known: {sorted(_FLAGS)}")
    state = read_state_dict(path)
    try:
        config = infer_adm_config(state)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    name = preset if preset is not None else _matching_preset(config)
    if name is not None:
        config = {**config, **{k: v for k, v in _preset(name)["model"].items()
                               if k in _SHAPELESS}}
    elif not {"num_heads", "num_head_channels"} & set(overrides):
        raise ValueError(
            f"{path}: its shapes match no ADM preset ({sorted(ADM_PRESETS)}) and the attention "
            "heads do not show in the weights: pass load_pretrained(path, num_head_channels=N "
            "or num_heads=N or preset=...) in Python (guided-diffusion's flags for this model); "
            "for the command line, save it once as a folder with "
            "dipprior.diffusion.save(*load_pretrained(path, num_head_channels=N), folder)")
    if "num_heads" in overrides and "num_head_channels" not in overrides:
        overrides = {**overrides, "num_head_channels": -1}  # a head count, not a head width
    config.update(overrides)
    try:
        with torch.device("meta"):  # no memory and no random init for 550M parameters
            model = ADMUNet(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    assign_weights(model, state, str(path))
    dev = default_device(device)
    set_precision(model, dtype, dev)
    return model.to(dev).eval(), adm_scheduler()
