"""dipprior: Deep Image Prior initialisation for fast diffusion-based image restoration.

The public names below are imported lazily, so ``import dipprior`` stays cheap and the
sub-packages (``dipprior.dip``, ``dipprior.diffusion``, ...) can be used on their own.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_image": "dipprior.io",
    "save_image": "dipprior.io",
    "sample_image": "dipprior.io",
    "evaluate": "dipprior.metrics",
    "Denoise": "dipprior.operators",
    "Inpaint": "dipprior.operators",
    "SuperResolution": "dipprior.operators",
    "Blur": "dipprior.operators",
    "TASKS": "dipprior.operators",
    "make_task": "dipprior.operators",
    "DIPConfig": "dipprior.dip",
    "Scheduler": "dipprior.diffusion",
    "UNet": "dipprior.diffusion",
    "load_pretrained": "dipprior.diffusion",
    "DIPInitializedSampler": "dipprior.pipeline",
    "SamplerConfig": "dipprior.pipeline",
    "AdaptConfig": "dipprior.pipeline",
    "DIPBaseline": "dipprior.pipeline",
    "compare": "dipprior.experiments",
}

__all__ = ["__version__", *_EXPORTS]

# What each lazy name is, for documentation tools, which read ``__annotations__`` and
# ``__doc__`` without touching the names (pdoc); the names still load on first use.
__annotations__ = {name: f"type[{module}.{name}]" if name[0].isupper() else "typing.Callable"
                   for name, module in _EXPORTS.items()}
__doc__ = (__doc__ or "") + "\nWhere each lives:\n\n" + "\n".join(
    f"- `{name}`: `{module}.{name}`" for name, module in _EXPORTS.items()) + "\n"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dipprior' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
