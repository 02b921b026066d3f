"""Deep Image Prior: the skip hourglass network, the fitting loop and early stopping.

Example:
    >>> import torch
    >>> from dipprior import dip
    >>> from dipprior.operators import Denoise
    >>> op = Denoise(25 / 255)
    >>> y = op.degrade(torch.rand(3, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> result = dip.fit(y, op, channels=8, iterations=10, progress=False)
    >>> result.image.shape
    torch.Size([3, 32, 32])
"""

from dipprior.dip.config import DIPConfig, DIPResult, FitState
from dipprior.dip.fit import build_network, fit, resolve_device
from dipprior.dip.net import SkipNet
from dipprior.dip.stopping import (
    WMV,
    Discrepancy,
    ReferenceDistance,
    SpikeGuard,
    discrepancy_stop_point,
    wmv_stop_point,
)

__all__ = [
    "WMV",
    "DIPConfig",
    "DIPResult",
    "Discrepancy",
    "FitState",
    "ReferenceDistance",
    "SkipNet",
    "SpikeGuard",
    "build_network",
    "discrepancy_stop_point",
    "fit",
    "resolve_device",
    "wmv_stop_point",
]
