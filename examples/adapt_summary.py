"""Markdown tables of the adapted prior against its peers, from the files the runs wrote.

* denoising: the per-crop CSVs of ``examples/train_prior.py export --tables DIR`` (columns PSNR
  -- the one step --, CBM3D PSNR, Default PSNR -- the sampler's default, the one step with its
  data term --, Adapted PSNR, Adapted s), one per test set and noise level;
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
             "default (same crops) | adapted | adapted - CBM3D | adapted - default "
             "| adapted s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sets:
        for sigma in sigmas:
            path = folder / f"denoise_{name}_sigma{sigma}.csv"
            if not path.is_file():
                continue
            rows = [r for r in csv.DictReader(path.open()) if r["Image"] != "Average"]
            has_ref = bool(rows and rows[0].get("CBM3D PSNR"))
            one = [float(r["PSNR"]) for r in rows]
            ref = [float(r["CBM3D PSNR"]) for r in rows] if has_ref else []
            cells = [name, sigma, str(len(rows)), f"{_mean(one):.2f}",
                     f"{_mean(ref):.2f}" if has_ref else "", _diff(one, ref) if has_ref else ""]
            adapted = [r for r in rows if r.get("Adapted PSNR")]
            if adapted:
                a = [float(r["Adapted PSNR"]) for r in adapted]
                d = [float(r["Default PSNR"]) for r in adapted]
                c = [float(r["CBM3D PSNR"]) for r in adapted] if has_ref else []
                cells += [str(len(adapted)), f"{_mean(d):.2f}", f"{_mean(a):.2f}",
                          _diff(a, c) if has_ref else "", _diff(a, d),
                          f"{_mean([float(r['Adapted s']) for r in adapted]):.1f}"]
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
        base = {k: [methods[k][i][0] for i in images] for k in ("Biharmonic", "Default")
                if k in methods}  # a --no-baselines run has neither
        for method, per_image in methods.items():
            psnr = [per_image[i][0] for i in images]
            secs = _mean([per_image[i][1] for i in images])
            versus = [_diff(psnr, base[k]) if k in base else "" for k in ("Biharmonic",
                                                                           "Default")]
            lines.append(f"| {data} | {task} | {len(images)} | {method} | {_mean(psnr):.2f} "
                         f"| {secs:.1f} | {versus[0]} | {versus[1]} |")
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
