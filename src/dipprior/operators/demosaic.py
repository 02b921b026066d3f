"""Demosaicing: ``Demosaic`` (a Bayer colour filter array), its classical restorations and its
task -- the task contract's proof: this file, its export and its tuned settings are all it took.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from dipprior.operators.base import Tensor, _check_classical, _check_sigma, scaled_t0
from dipprior.operators.inpaint import Masked
from dipprior.operators.registry import Param, Task, noise_level, register

__all__ = ["Demosaic", "PATTERNS", "DEMOSAICING", "demosaicing"]

Pattern = Literal["RGGB", "BGGR", "GRBG", "GBRG"]
PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
#: colour-demosaicing's methods by name: the classical peers (Menon 2007 is the start)
DEMOSAICING = {"bilinear": "demosaicing_CFA_Bayer_bilinear",
               "malvar2004": "demosaicing_CFA_Bayer_Malvar2004",
               "menon2007": "demosaicing_CFA_Bayer_Menon2007"}


class Demosaic(Masked):
    """A Bayer colour filter array: each pixel keeps one of its three colours,
    ``y = M * (x + sigma n)``, the other two channels of ``y`` zero.

    ``pattern`` names the colours of the top-left 2x2 block, row by row (``"RGGB"``: red at
    (0, 0), green at (0, 1) and (1, 0), blue at (1, 1)), as colour-demosaicing's
    ``masks_CFA_Bayer``.  Any image size.  The classical restoration is Menon (2007)
    (:func:`demosaicing`; bilinear and Malvar 2004 are the other peers).

    >>> op = Demosaic("RGGB")
    >>> y = op(torch.rand(3, 4, 4))
    >>> (y != 0).sum(0).max().item(), (y[1] != 0).float().mean().item()
    (1, 0.5)
    """

    task = "demosaic"
    classical_name = "Menon 2007"
    keeps_grey = False  # a grey raw image holds the colours
    #: t0 of the chain from Menon 2007 (T = 1000): tuned on 4 held-out CBSD432 crops over 10, 15,
    #: 25, 50, 100, 200 (36.44 dB at 25; Menon alone 32.40; docs/results.md, demosaicing)
    CLASSICAL_T0 = 25

    def __init__(self, pattern: Pattern = "RGGB", sigma: float = 0.0) -> None:
        if pattern not in PATTERNS:
            raise ValueError(f"pattern: expected one of {PATTERNS}, got {pattern!r}")
        self.pattern = pattern
        self.noise_sigma = _check_sigma(sigma)
        self._cache: dict[tuple[tuple[int, int], torch.device, torch.dtype], Tensor] = {}

    def mask(self, shape: Sequence[int]) -> Tensor:
        """The (3, H, W) 0/1 mask of an image of ``shape`` (..., H, W): 1 where a colour is kept."""
        h, w = shape[-2:]
        out = torch.zeros(3, h, w)
        for i, colour in enumerate(self.pattern):  # the 2x2 block, row by row
            out["RGB".index(colour), i // 2::2, i % 2::2] = 1.0
        return out

    def _m(self, x: Tensor) -> Tensor:
        if x.shape[-3] != 3:
            raise ValueError(f"x: a colour filter array needs 3 channels, got shape "
                             f"{tuple(x.shape)}")
        key = (tuple(x.shape[-2:]), x.device, x.dtype)
        if key not in self._cache or (self._cache[key].is_inference()
                                      and not torch.is_inference_mode_enabled()):
            with torch.inference_mode(False):
                self._cache[key] = self.mask(x.shape).to(x.device, x.dtype)
        return self._cache[key]

    def classical(self, y: Tensor) -> Tensor:
        return demosaicing(y, self)

    def classical_t0(self, num_train_timesteps: int = 1000) -> int:
        return scaled_t0(self.CLASSICAL_T0, num_train_timesteps)

    def crop(self, top: int, left: int, height: int, width: int) -> Demosaic:
        # the window starts on another cell of the 2x2 block: its pattern shifts with it
        p = self.pattern
        rows = (p[:2], p[2:]) if top % 2 == 0 else (p[2:], p[:2])
        shifted = "".join(r if left % 2 == 0 else r[::-1] for r in rows)
        return Demosaic(shifted, self.noise_sigma)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Demosaic(pattern={self.pattern!r}, noise_sigma={self.noise_sigma:g})"


def demosaicing(observation: Tensor, operator: Demosaic, method: str = "menon2007") -> Tensor:
    """Demosaic an observation of ``operator`` with colour-demosaicing's ``method``
    (``"bilinear"``, ``"malvar2004"`` or ``"menon2007"``), not clamped.

    >>> demosaicing(Demosaic()(torch.full((3, 8, 8), 0.5)), Demosaic(), "bilinear").shape
    torch.Size([3, 8, 8])
    """
    with warnings.catch_warnings():  # its scipy.ndimage.filters imports warn; not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        import colour_demosaicing

    _check_classical(observation, operator, Demosaic, "demosaicing")
    if method not in DEMOSAICING:
        raise ValueError(f"method: expected one of {sorted(DEMOSAICING)}, got {method!r}")
    operator.forward(observation)  # checks the channels
    cfa = (observation * operator._m(observation)).sum(0).detach().cpu().double().numpy()
    rgb = getattr(colour_demosaicing, DEMOSAICING[method])(cfa, operator.pattern)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, 0))).to(
        observation.device, torch.float32)


def _make_demosaic(*, real: bool, pattern: str, cfa_sigma: float) -> Demosaic:
    return Demosaic(pattern, noise_level(cfa_sigma, "cfa_sigma"))  # type: ignore[arg-type]


register(Task(
    "demosaic", "demosaicing (Bayer)", _make_demosaic,
    (Param("pattern", str, "RGGB", f"the Bayer pattern, one of {', '.join(PATTERNS)}"),
     Param("cfa_sigma", float, 0.0, "noise std, 0..255 units", option="--sigma")),
    label=lambda p: p["pattern"] + (f", sigma {p['cfa_sigma']:g}" if p["cfa_sigma"] else ""),
    heading=lambda p: f"demosaicing, Bayer {p['pattern']}"
                      + (f", noise {p['cfa_sigma']:g}/255" if p["cfa_sigma"] else "")))
