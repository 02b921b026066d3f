"""The dtype policy of a prior: float32 unless asked, so a call gives the same numbers on every CPU.

Every loader (:func:`~dipprior.diffusion.load_pretrained`, :func:`~dipprior.diffusion.load`,
:func:`~dipprior.diffusion.load_adm`, :func:`~dipprior.diffusion.load_diffusers`) takes
``dtype=`` (as diffusers' ``torch_dtype``) and passes it to :func:`set_precision`:

* ``"float32"`` (default): the same numbers on every machine;
* ``"bfloat16"`` / ``"float16"``: the network's torso under ``torch.autocast`` in that dtype, its
  time embedding and output layer in float32 (guided-diffusion's ``use_fp16``); the weights
  stay float32;
* ``"auto"``: bfloat16 where ``device`` runs it natively (:func:`fast_bf16`), else float32.
  Results then depend on the machine.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["Precision", "PRECISIONS", "fast_bf16", "autocast_dtype", "set_precision"]

Precision = Literal["float32", "bfloat16", "float16", "auto"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16", "auto")
_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def fast_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 convolutions are native on ``device``: a CUDA GPU that supports bf16, or
    a CPU with oneDNN bf16 kernels (AVX512-BF16/AMX).  Elsewhere PyTorch falls back to slow
    reference kernels (measured: a 64-channel 3x3 convolution 80x slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":  # native from Ampere (sm_80) on; older GPUs only emulate it
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_dtype(dtype: Precision | torch.dtype | None, device: str | torch.device
                   ) -> torch.dtype | None:
    """``dtype`` -> the autocast dtype of the network's torso (``None``: float32 throughout)."""
    if dtype is None or dtype == torch.float32:
        return None
    if dtype in (torch.bfloat16, torch.float16):
        return dtype  # type: ignore[return-value]
    if dtype == "auto":
        return torch.bfloat16 if fast_bf16(device) else None
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype: expected one of {list(PRECISIONS)} or torch.float32/bfloat16/"
                     f"float16, got {dtype!r}")


def set_precision(model: torch.nn.Module, dtype: Precision | torch.dtype | None = "float32",
                  device: str | torch.device | None = None) -> torch.nn.Module:
    """Run ``model`` in ``dtype`` (see the module docstring); returns ``model``.

    Works on dipprior's ``UNet``, ``ADMUNet`` and ``DiffusersUNet`` (anything with an
    ``autocast`` attribute); another model accepts only float32 (cast it yourself otherwise).
    """
    if device is None:
        param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        device = param.device if param is not None else "cpu"
    low = autocast_dtype(dtype, device)
    if not hasattr(model, "autocast"):
        if low is not None:
            raise TypeError(f"dtype={dtype!r}: {type(model).__name__} has no 'autocast' "
                            "attribute; cast the model yourself (model.to(dtype))")
        return model
    model.autocast = low
    return model
