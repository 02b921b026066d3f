"""Markdown tables of the adapted prior against its peers, from the files the runs wrote.

* denoising: the per-crop CSVs of ``examples/train_prior.py export --tables DIR`` (columns PSNR,
  CBM3D PSNR, Adapted PSNR, Adapted s), one per test set and noise level;
* noise-free tasks: the JSON lines of ``examples/adapt_table.py``.

Differences are means over the same crops; "wins" counts crops where the first is higher.

    python examples/adapt_summary.py --tables docs/results/prior \\
        --noise-free docs/results/adapt/test_noise_free.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def denoising(folder: Path, sets: list[str], sigmas: list[str]) -> str:
    lines = ["| set | sigma | crops | one step | CBM3D | one step - CBM3D | crops adapted | "
             "one step (same crops) | adapted | adapted - CBM3D | adapted - one step "
             "| adapted s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sets:
        for sigma in sigmas:
            path = folder / f"denoise_{name}_sigma{sigma}.csv"
            if not path.is_file():
                continue
            rows = [r for r in csv.DictReader(path.open()) if r["Image"] != "Average"]
            one = [float(r["PSNR"]) for r in rows]
            ref = [float(r["CBM3D PSNR"]) for r in rows]
            cells = [name, sigma, str(len(rows)), f"{_mean(one):.2f}", f"{_mean(ref):.2f}",
                     _diff(one, ref)]
            adapted = [r for r in rows if r.get("Adapted PSNR")]
            if adapted:
                a = [float(r["Adapted PSNR"]) for r in adapted]
                o = [float(r["PSNR"]) for r in adapted]
                c = [float(r["CBM3D PSNR"]) for r in adapted]
                cells += [str(len(adapted)), f"{_mean(o):.2f}", f"{_mean(a):.2f}", _diff(a, c),
                          _diff(a, o), f"{_mean([float(r['Adapted s']) for r in adapted]):.1f}"]
            else:
                cells += ["0", "", "", "", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _diff(a: list[float], b: list[float]) -> str:
    wins = sum(x > y for x, y in zip(a, b, strict=True))
    return f"{_mean(a) - _mean(b):+.2f} ({wins}/{len(a)})"


def noise_free(path: Path) -> str:
    runs: dict[tuple[str, str], dict[str, dict[str, tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(dict))
    for line in path.open():
        r = json.loads(line)
        runs[(r["data"], r["task"])][r["method"]][r["image"]] = (r["psnr"], r["seconds"])
    lines = ["| set | task | crops | method | PSNR | seconds | - biharmonic | - default |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for (data, task), methods in runs.items():
        images = sorted(set.intersection(*(set(m) for m in methods.values())))
        base = {k: [methods[k][i][0] for i in images] for k in ("Biharmonic", "Default")}
        for method, per_image in methods.items():
            psnr = [per_image[i][0] for i in images]
            secs = _mean([per_image[i][1] for i in images])
            lines.append(f"| {data} | {task} | {len(images)} | {method} | {_mean(psnr):.2f} "
                         f"| {secs:.1f} | {_diff(psnr, base['Biharmonic'])} "
                         f"| {_diff(psnr, base['Default'])} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", help="folder of denoise_<set>_sigma<s>.csv")
    p.add_argument("--sets", default="CBSD68,Kodak24,Urban100")
    p.add_argument("--sigmas", default="25,15,50")
    p.add_argument("--noise-free", help="JSON lines of examples/adapt_table.py")
    args = p.parse_args()
    if args.tables:
        print(denoising(Path(args.tables), args.sets.split(","), args.sigmas.split(",")))
    if args.noise_free:
        print()
        print(noise_free(Path(args.noise_free)))


if __name__ == "__main__":
    main()
