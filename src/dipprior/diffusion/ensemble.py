"""Geometric self-ensemble of a prior: its output averaged over flips and rotations of its input.

A prior trained on photos with random flips and quarter turns is nearly, not exactly, equivariant
to them; averaging ``g^-1 model(g x, t)`` over a group of symmetries ``g`` of the square makes it
exactly equivariant and averages out part of its error (the "x8" test-time trick of image
restoration networks; deepinv's ``EquivariantDenoiser`` with all transforms).  The noise
prediction is a pixel-wise field like ``x``, so the same inverse maps it back.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from dipprior._tensor import Model
from dipprior.diffusion.sampling import as_tensor

__all__ = ["ENSEMBLES", "Ensemble", "SelfEnsemble", "symmetries"]

Ensemble = Literal[1, 2, 4, 8]
#: the ensemble sizes: 1 (the model alone), 2 (and its left-right mirror), 4 (the mirrors and the
#: half turn: no change of shape), 8 (all symmetries of the square)
ENSEMBLES: tuple[int, ...] = get_args(Ensemble)


def symmetries(size: int) -> list[tuple[int, bool]]:
    """The ``size`` symmetries of the square as ``(quarter turns, mirrored first)``."""
    if size not in ENSEMBLES:
        raise ValueError(f"ensemble: expected one of {ENSEMBLES}, got {size!r}")
    every = [(turns, mirrored) for mirrored in (False, True) for turns in range(4)]
    chosen = {1: [(0, False)], 2: [(0, False), (0, True)],
              4: [(0, False), (2, False), (0, True), (2, True)], 8: every}
    return chosen[size]


def _apply(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    x = x.flip(-1) if mirrored else x
    return torch.rot90(x, turns, (-2, -1))


def _undo(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    x = torch.rot90(x, -turns, (-2, -1))
    return x.flip(-1) if mirrored else x


class SelfEnsemble(nn.Module):
    """``model`` averaged over ``size`` symmetries of the square (:func:`symmetries`):
    ``mean_g g^-1 model(g x, t)``, in one batch per output shape (a non-square input's odd
    quarter turns form a second batch).  Costs ``size`` model evaluations per call; holds no
    weights of its own (``model``'s are shared, never copied).

    The wrapper takes the wrapped model's train/eval mode and never changes it.

    >>> import torch
    >>> right_half = lambda x, t: x * (torch.arange(x.shape[-1]) >= x.shape[-1] // 2)
    >>> x = torch.randn(1, 3, 4, 4)
    >>> bool(torch.allclose(SelfEnsemble(right_half, 2)(x, torch.zeros(1)), x / 2))
    True
    """

    def __init__(self, model: Model, size: int = 8) -> None:
        super().__init__()
        self.transforms = symmetries(size)
        self.model = model
        # its mode, set without touching the model's: a later .train() would switch the model's
        self.training = bool(getattr(model, "training", False))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        total = None
        shapes: dict[tuple[int, int], list[tuple[int, bool]]] = {}
        h, w = x.shape[-2:]
        for g in self.transforms:  # one batch per output shape: odd turns swap height and width
            shapes.setdefault((w, h) if g[0] % 2 else (h, w), []).append(g)
        for group in shapes.values():
            views = torch.cat([_apply(x, *g) for g in group])
            out = as_tensor(self.model(views, t.repeat(len(group))))
            for part, g in zip(out.chunk(len(group)), group, strict=True):
                part = _undo(part, *g).float()  # summed in float32 whatever the model's dtype
                total = part if total is None else total + part
                dtype = out.dtype
        return (total / len(self.transforms)).to(dtype)
