"""Figures of the experiments: quality against NFE and seconds, and the demo's image grid."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dipprior._atomic import atomic_write_bytes

__all__ = ["plot_psnr_vs_seconds", "plot_quality_vs_nfe", "save_figure"]


def plot_quality_vs_nfe(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                        *, title: str | None = None) -> None:
    """Two panels, PSNR against NFE and against seconds (log x), one line per method.

    Written atomically as PNG.  Needs matplotlib (``pip install dipprior[plot]``).
    """
    from dipprior._mpl import PLOT_HINT, figure

    if not rows:
        raise ValueError("rows: empty")
    fig = figure(figsize=(10, 4), layout="constrained")
    if fig is None:
        raise ImportError(f"plot_quality_vs_nfe needs matplotlib: {PLOT_HINT}")
    axes = fig.subplots(1, 2)
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
    _write_figure(fig, path, dpi=120)


def plot_psnr_vs_seconds(points: Mapping[str, Sequence[tuple[float, float]]],
                         path: str | os.PathLike, *, title: str = "",
                         xlabel: str = "seconds per image (mean)") -> Path | None:
    """Mean PSNR against mean seconds (log x), one marker or line per method: ``points`` maps a
    method to its ``(seconds, psnr)`` points.  Written atomically as PNG; None (nothing
    written) without matplotlib."""
    from dipprior._mpl import figure

    fig = figure(figsize=(6, 4))
    if fig is None:
        return None
    ax = fig.subplots()
    for method, pts in points.items():
        pts = sorted(p for p in pts if math.isfinite(p[0]))
        if pts:
            ax.plot([max(p[0], 1e-2) for p in pts], [p[1] for p in pts],
                    "o-" if len(pts) > 1 else "o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB, mean)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _write_figure(fig, path, dpi=120, bbox_inches="tight")


def save_figure(panels: dict[str, dict[str, torch.Tensor]],
                psnr: dict[tuple[str, str], float] | None, path: str | os.PathLike,
                title: str = "") -> Path:
    """A grid: one row per image, columns ground truth / degraded / each method, as PNG.

    ``panels`` maps image name -> column label -> (3, H, W) image; ``psnr`` maps
    ``(image, column)`` to the PSNR shown under the label.  Drawn with matplotlib when it is
    installed, else with Pillow: the same grid, each tile with its label (and PSNR) above it and
    the image name on the left, small crops enlarged (nearest neighbour, an integer factor) so
    that the labels fit.  Written atomically either way.
    """
    from dipprior._mpl import figure

    path = Path(path)
    psnr = psnr or {}
    names = list(panels)
    columns = list(next(iter(panels.values())))
    fig = figure(figsize=(1.9 * len(columns), 2.15 * len(names) + 0.35), dpi=72)
    if fig is None:
        return _save_grid(panels, path, psnr, title)
    axes = fig.subplots(len(names), len(columns), squeeze=False)
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
    return _write_figure(fig, path)


def _write_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """``fig`` (a bare Figure, no pyplot) as PNG bytes, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    return atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- without matplotlib

_PAD = 4  # pixels between tiles, around labels and at the edges
_MAX_SCALE = 16


@dataclass
class _GridLayout:
    """Where :func:`_save_grid` puts everything (pixels, (left, top) and (left, top, right,
    bottom) boxes); tiles are enlarged ``scale`` times."""

    scale: int
    size: tuple[int, int]  # (width, height)
    tiles: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    labels: dict[tuple[str, str], tuple[int, int, int, int]] = field(default_factory=dict)
    names: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    title: tuple[int, int, int, int] | None = None
    title_lines: list[str] = field(default_factory=list)


def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(math.ceil(right)), int(math.ceil(bottom))


def _wrap(font: Any, text: str, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to ``width`` pixels (a longer word gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_size(font, f"{lines[-1]} {word}")[0] <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _label_lines(name: str, column: str, psnr: Mapping[tuple[str, str], float]) -> list[str]:
    value = psnr.get((name, column))
    return [column] + ([f"{value:.2f} dB"] if value is not None else [])


def _grid_layout(panels: Mapping[str, Mapping[str, torch.Tensor]],
                 psnr: Mapping[tuple[str, str], float] | None = None, title: str = "",
                 font: Any = None) -> _GridLayout:
    """The layout of :func:`_save_grid`: per image a row, with a label band (column name, PSNR
    under it) above every tile and the image name on the left; a wrapped title on top."""
    font = font or _font()
    psnr = psnr or {}
    names = list(panels)
    columns = list(dict.fromkeys(c for images in panels.values() for c in images))
    line = _text_size(font, "Ag")[1] + 2
    widths = {c: max(panels[n][c].shape[-1] for n in names if c in panels[n]) for c in columns}
    heights = {n: max(image.shape[-2] for image in panels[n].values()) for n in names}
    text = {(n, c): max(_text_size(font, t)[0] for t in _label_lines(n, c, psnr))
            for n in names for c in panels[n]}
    need = max(text.values()) + _PAD
    scale = max(1, min(_MAX_SCALE, math.ceil(need / min(widths.values()))))
    cell = {c: max(widths[c] * scale,
                   max(text[n, c] for n in names if (n, c) in text) + _PAD) for c in columns}
    band = line * max(len(_label_lines(n, c, psnr)) for n, c in text) + _PAD
    left0 = max(_text_size(font, n)[0] for n in names) + 2 * _PAD
    grid_width = left0 + sum(cell.values()) + _PAD * len(columns)
    title_lines = _wrap(font, title, grid_width - 2 * _PAD) if title else []
    width = max([grid_width] + [_text_size(font, t)[0] + 2 * _PAD for t in title_lines])
    layout = _GridLayout(scale=scale, size=(width, 0), title_lines=title_lines)
    top = _PAD
    if title_lines:
        layout.title = (_PAD, top, width - _PAD, top + line * len(title_lines))
        top = layout.title[3] + _PAD
    for n in names:
        tile_top = top + band
        row_height = heights[n] * scale
        layout.names[n] = (_PAD, tile_top, left0 - _PAD, tile_top + row_height)
        left = left0
        for c in columns:
            if c in panels[n]:
                tile_w = panels[n][c].shape[-1] * scale
                layout.labels[n, c] = (left, top, left + cell[c], tile_top)
                layout.tiles[n, c] = (left + (cell[c] - tile_w) // 2, tile_top)
            left += cell[c] + _PAD
        top = tile_top + row_height + _PAD
    layout.size = (width, top)
    return layout


def _save_grid(panels: dict[str, dict[str, torch.Tensor]], path: str | os.PathLike,
               psnr: Mapping[tuple[str, str], float] | None = None, title: str = "") -> Path:
    """The figure of :func:`save_figure` drawn with Pillow (no matplotlib), written atomically."""
    import numpy as np
    from PIL import Image, ImageDraw

    path = Path(path)
    psnr = psnr or {}
    font = _font()
    layout = _grid_layout(panels, psnr, title, font)
    canvas = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(canvas)
    line = _text_size(font, "Ag")[1] + 2
    for (n, c), (left, top) in layout.tiles.items():
        tile = panels[n][c].detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
        array = np.ascontiguousarray(tile.permute(1, 2, 0).numpy())
        array = array.repeat(layout.scale, axis=0).repeat(layout.scale, axis=1)
        canvas.paste(Image.fromarray(array), (left, top))
    for (n, c), (left, top, right, _bottom) in layout.labels.items():
        for k, text in enumerate(_label_lines(n, c, psnr)):
            x = left + (right - left - _text_size(font, text)[0]) // 2
            draw.text((x, top + _PAD // 2 + k * line), text, fill="black", font=font)
    for n, (left, top, _right, bottom) in layout.names.items():
        y = (top + bottom - _text_size(font, n)[1]) // 2
        draw.text((left, y), n, fill="black", font=font)
    if layout.title is not None:
        left, top, right, _ = layout.title
        for k, text in enumerate(layout.title_lines):
            x = left + (right - left - _text_size(font, text)[0]) // 2
            draw.text((x, top + k * line), text, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return atomic_write_bytes(path, buffer.getvalue())
