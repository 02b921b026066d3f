"""Figures of the experiments: quality against NFE and seconds, and the demo's image grid."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dipprior._atomic import atomic_write_bytes

__all__ = ["plot_quality_vs_nfe", "save_figure"]


def plot_quality_vs_nfe(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                        *, title: str | None = None) -> None:
    """Two panels, PSNR against NFE and against seconds (log x), one line per method.

    Written atomically as PNG.  Needs matplotlib (``pip install dipprior[plot]``).
    """
    from dipprior._mpl import pyplot

    plt = pyplot()
    if plt is None:
        raise ImportError("plot_quality_vs_nfe needs matplotlib: pip install matplotlib")
    if not rows:
        raise ValueError("rows: empty")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    methods = list(dict.fromkeys(r["Method"] for r in rows))
    for method in methods:
        sel = sorted((r for r in rows if r["Method"] == method), key=lambda r: r["NFE"])
        if all(r["NFE"] == 0 for r in sel):  # no diffusion (DIP alone): a reference level
            line = axes[0].axhline(sel[0]["PSNR"], ls="--", color="gray", label=method)
            axes[1].plot([max(r["Seconds"], 1e-3) for r in sel], [r["PSNR"] for r in sel], "s",
                         color=line.get_color(), label=method)
            continue
        for ax, key in zip(axes, ("NFE", "Seconds"), strict=True):
            ax.plot([max(r[key], 1e-3) for r in sel], [r["PSNR"] for r in sel], "o-",
                    label=method)
    for ax, label in zip(axes, ("NFE (diffusion model evaluations)",
                                "seconds per image (incl. DIP fit)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    _write_figure(plt, fig, path, dpi=120)


def save_figure(panels: dict[str, dict[str, torch.Tensor]],
                psnr: dict[tuple[str, str], float] | None, path: str | os.PathLike,
                title: str = "") -> Path:
    """A grid: one row per image, columns ground truth / degraded / each method, as PNG.

    ``panels`` maps image name -> column label -> (3, H, W) image; ``psnr`` maps
    ``(image, column)`` to the PSNR shown under the label.  Drawn with matplotlib when it is
    installed, else assembled as a plain image grid with :func:`dipprior.io.save_image` -- the
    file exists either way.
    """
    from dipprior._mpl import pyplot

    path = Path(path)
    psnr = psnr or {}
    plt = pyplot()
    if plt is None:
        return _save_grid(panels, path)
    names = list(panels)
    columns = list(next(iter(panels.values())))
    fig, axes = plt.subplots(len(names), len(columns), squeeze=False,
                             figsize=(1.9 * len(columns), 2.15 * len(names) + 0.35), dpi=72)
    for r, name in enumerate(names):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(panels[name][column].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            label = column
            value = psnr.get((name, column))
            if value is not None:
                label += f"\n{value:.2f} dB"
            ax.set_title(label, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _write_figure(plt, fig, path)


def _write_figure(plt: Any, fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _save_grid(panels: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    from dipprior.io import save_image

    gap = 2
    rows = []
    for images in panels.values():
        tiles = []
        for image in images.values():
            tiles += [image, torch.ones(3, image.shape[-2], gap)]
        rows += [torch.cat(tiles[:-1], dim=-1)]
        rows += [torch.ones(3, gap, rows[-1].shape[-1])]
    return save_image(torch.cat(rows[:-1], dim=-2), path)
