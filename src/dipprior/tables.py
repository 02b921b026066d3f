"""The results table every comparison in this project is reported with: the seed's columns
(Image, PSNR, SSIM, MSE, MAE, Delta E) per image and averaged, as Markdown and CSV.

Re-exported by :mod:`dipprior.metrics`, where users find it next to the metrics it reports.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dipprior._atomic import atomic_write_text

__all__ = ["AVERAGE", "DEFAULT_FORMATS", "METRIC_COLUMNS", "ResultsTable", "results_table"]

# evaluate()'s keys -> column labels of the seed's table
METRIC_COLUMNS = {"psnr": "PSNR", "ssim": "SSIM", "mse": "MSE", "mae": "MAE", "delta_e": "Delta E"}
# Markdown number formats; CSV always keeps full precision.
DEFAULT_FORMATS = {
    "PSNR": ".2f",
    "SSIM": ".4f",
    "MSE": ".6f",
    "MAE": ".6f",
    "Delta E": ".3f",
    "NFE": "d",
    "Seconds": ".2f",
}
AVERAGE = "Average"


@dataclass
class ResultsTable:
    """Rows of a results table (per image, then averages); render with ``to_markdown``/``to_csv``.

    ``rows`` are dicts keyed by the column labels in ``columns``; the average rows have
    ``Image == "Average"``. ``str(table)`` is the Markdown rendering.
    """

    columns: list[str]
    rows: list[dict[str, Any]]
    formats: dict[str, str] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table; numbers right-aligned, formatted per column."""
        cells = [[self._format(row.get(c), c) for c in self.columns] for row in self.rows]
        numeric = [
            any(isinstance(r.get(c), (int, float, np.number)) and not isinstance(r.get(c), bool)
                for r in self.rows)
            for c in self.columns
        ]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]

        def line(values: Sequence[str]) -> str:
            padded = [
                v.rjust(w) if num else v.ljust(w)
                for v, w, num in zip(values, widths, numeric, strict=True)
            ]
            return "| " + " | ".join(padded) + " |"

        rule = ["-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric,
                                                                           strict=True)]
        return "\n".join([line(self.columns), line(rule), *(line(r) for r in cells)]) + "\n"

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV text (full precision); also written atomically to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in self.columns])
        text = buffer.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def __str__(self) -> str:
        return self.to_markdown()

    def _format(self, value: Any, column: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.number)):
            return str(value)
        if isinstance(value, float | np.floating) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        spec = self.formats.get(column)
        if spec is None:
            spec = "d" if isinstance(value, (int, np.integer)) else ".4g"
        if spec == "d" and not float(value).is_integer():
            spec = ".2f"  # an average of integer counts
        return format(int(value) if spec == "d" else value, spec)


def results_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    average: bool = True,
    formats: Mapping[str, str] | None = None,
) -> ResultsTable:
    """Build the seed's results table: one row per image, then the average.

    Args:
        rows: one mapping per image. ``"Image"`` names the image; metric values may be keyed by
            :func:`evaluate`'s names (``psnr, ssim, mse, mae, delta_e``) or by the column labels
            (``PSNR, SSIM, MSE, MAE, Delta E``), so ``{"Image": name, **evaluate(p, t)}`` works.
            Any other key (``Method``, ``NFE``, ``Seconds``, ...) becomes an extra column.
        columns: labels to show, in order. Default: ``Image``, ``Method`` (if any row has it),
            the metric columns present, then the other extras in order of first appearance.
        average: append average rows (``Image == "Average"``): one per ``Method`` in order of
            first appearance when a ``Method`` column exists, else one. Numeric columns are
            averaged over the rows that have a value (PSNR is the mean of per-image PSNRs, as in
            papers, not the PSNR of the mean MSE); text columns are left empty.
        formats: Markdown format specs per column label, overriding :data:`DEFAULT_FORMATS`
            (PSNR ``.2f``, SSIM ``.4f``, MSE/MAE ``.6f``, Delta E ``.3f``, NFE ``d``,
            Seconds ``.2f``; other floats ``.4g``).

    Returns:
        A :class:`ResultsTable`; ``print(table)`` shows Markdown, ``table.to_csv(path)`` writes CSV.

    Example:
        >>> t = results_table([{"Image": "a", "psnr": 30.0, "ssim": 0.9, "mse": 1e-3,
        ...                     "mae": 0.02, "delta_e": 2.0}])
        >>> print(t.to_markdown().splitlines()[0])
        | Image   |  PSNR |   SSIM |      MSE |      MAE | Delta E |
    """
    table_rows: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows: item {i} is a {type(row).__name__}, expected a dict")
        if "Image" not in row:
            raise ValueError(f"rows: item {i} has no 'Image' key")
        converted = {METRIC_COLUMNS.get(k, k): v for k, v in row.items()}
        for key, value in converted.items():
            if isinstance(value, (np.ndarray, torch.Tensor, np.generic)):
                if np.size(value) != 1:
                    raise ValueError(
                        f"rows: item {i}, {key!r} holds several values; pass one row per image"
                    )
                converted[key] = value.item()
        table_rows.append(converted)
    if not table_rows:
        raise ValueError("rows: empty; expected at least one row")

    seen: list[str] = []
    for row in table_rows:
        seen.extend(k for k in row if k not in seen)
    if columns is None:
        metrics_present = [c for c in METRIC_COLUMNS.values() if c in seen]
        extras = [c for c in seen if c not in ("Image", "Method", *METRIC_COLUMNS.values())]
        columns = ["Image", *(["Method"] if "Method" in seen else []), *metrics_present, *extras]
    else:
        columns = [METRIC_COLUMNS.get(c, c) for c in columns]
        unknown = [c for c in columns if c not in seen]
        if unknown:
            raise ValueError(f"columns: {unknown} not found in rows (have {seen})")

    if average:
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in table_rows:
            groups.setdefault(row.get("Method") if "Method" in columns else None, []).append(row)
        for method, members in groups.items():
            avg: dict[str, Any] = {"Image": AVERAGE}
            if "Method" in columns:
                avg["Method"] = method
            for col in columns:
                if col in ("Image", "Method"):
                    continue
                values = [r[col] for r in members if _is_number(r.get(col))]
                if values:
                    avg[col] = float(np.mean(values))
            table_rows.append(avg)
    return ResultsTable(list(columns), table_rows, {**DEFAULT_FORMATS, **(formats or {})})


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.number))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )
