"""``restore DIR``'s files: the folder's images, their output names and the metrics table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from dipprior.cli.options import check_output_folder

METRICS = "metrics.csv"
METRICS_COLUMNS = ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "DIP PSNR", "t0", "NFE",
                   "Seconds"]


def folder_images(folder: Path) -> list[Path]:
    """The images of ``folder`` (:data:`dipprior.io.IMAGE_SUFFIXES`), sorted by file name."""
    from dipprior.io import IMAGE_SUFFIXES

    try:
        paths = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except PermissionError:
        raise PermissionError(f"IMAGE: folder {str(folder)!r} is not readable") from None
    if not paths:
        raise ValueError(f"IMAGE: folder {str(folder)!r} holds no images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return paths


def check_out_folder(path: str, folder: Path) -> Path:
    """``--out`` for a folder: an existing writable folder, or one that can be created."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {path!r} is a file; IMAGE is a folder, so --out must be a "
                         f"folder")
    if not out.exists() and out.suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"--out: {path!r} looks like a file name; IMAGE is a folder, so --out "
                         f"must be a folder")
    if out.exists() and out.resolve() == folder.resolve():
        raise ValueError(f"--out: {path!r} is the input folder; choose another folder for the "
                         f"restored images")
    check_output_folder(path, "--out")  # an existing writable folder, or one it can create
    return out


def output_names(paths: list[Path], dip: bool) -> dict[Path, tuple[str, str | None]]:
    """Each image -> (output name, DIP output name or None); two images may not share one."""
    names: dict[Path, tuple[str, str | None]] = {}
    taken: dict[str, Path] = {}
    for path in paths:
        outputs = (f"{path.stem}.png", f"{path.stem}_dip.png" if dip else None)
        for name in outputs:
            if name is None:
                continue
            if name in taken:
                raise ValueError(f"IMAGE: {taken[name].name!r} and {path.name!r} would both be "
                                 f"written to {name!r}; rename one of them")
            taken[name] = path
        names[path] = outputs
    return names


def read_metrics(path: Path) -> dict[str, dict[str, str]]:
    """Rows of an existing ``metrics.csv`` by image file name (empty when there is none)."""
    if not path.exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"--out: cannot read {str(path)!r} ({exc})") from None
    if header != METRICS_COLUMNS:
        raise ValueError(f"--out: {str(path)!r} is not a metrics table of `dipprior restore` "
                         f"(columns {header}); move it away")
    return {row["Image"]: row for row in rows}


def write_metrics(path: Path, rows: dict[str, dict[str, Any]], order: list[str]) -> None:
    """All rows, the folder's images in order first (rows of images no longer there last)."""
    from dipprior._atomic import atomic_write_text

    rank = {name: i for i, name in enumerate(order)}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name in sorted(rows, key=lambda n: rank.get(n, len(order))):
        writer.writerow({k: rows[name].get(k, "") for k in METRICS_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
