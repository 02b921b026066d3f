"""Classical Gaussian denoisers used as references (optional packages, imported on use)."""

from __future__ import annotations

import torch

__all__ = ["cbm3d"]


def cbm3d(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """CBM3D of one (3, H, W) image in [0, 1] with noise std ``sigma`` (same scale) -> (3, H, W)
    in [0, 1], on the CPU.  Needs the optional ``bm3d`` package."""
    try:
        import bm3d
    except ImportError as exc:
        raise ImportError("cbm3d needs the optional 'bm3d' package: "
                          "pip install dipprior[bm3d]") from exc

    y = noisy.detach().cpu().double().permute(1, 2, 0).numpy()
    out = bm3d.bm3d_rgb(y, sigma)
    return torch.from_numpy(out).permute(2, 0, 1).float().clamp(0, 1)
