"""Every start of the chain on held-out crops, with its classical peer and its seconds.

Rows per crop: the classical peer (biharmonic for holes, bicubic for sr, Wiener for deblur, CBM3D
for denoising),
Classical->DDPM (the classical restoration as start), DiffPIR from noise, the cheapest good DIP
start (``--cheap CHANNELS:ITERATIONS``, alone and as start), DIP (``--dip64`` iterations of the
library's 64-channel DIP, alone and as start: DIP(k)->DDPM) and the library's default
(``DIPInitializedSampler(model, scheduler)`` with no settings, timed on its own).  Every setting
comes from :mod:`dipprior.pipeline.presets` (tuned on CBSD432 crops only); image i is degraded,
DIP-seeded and diffusion-seeded with ``seed + i``; the clean crop only scores.

    python examples/start_table.py --data ../shared/data/test/Kodak24 --task inpaint \\
        --n-images 8 --dip64 1000 --threads 1 --out docs/results/start/kodak24/inpaint

writes ``rows.csv`` (image, method, seconds, NFE and the seed's metrics), ``table.md`` (the
seed's table per method with averages), ``summary.md`` (means, and the default's margin over
the best of the classical peer and DiffPIR from noise per crop) and ``psnr_vs_seconds.png``.
``--reuse CSV`` copies the DIP(k) and DIP(k)->DDPM rows of an earlier ``time_to_quality.py``
run on the same crops and seeds (marked ``reused``) instead of fitting the 64-channel DIP again.
A run split over processes with ``--first``/``--n-images`` is joined with
``--merge DIR DIR ... --out DIR`` (rows in image order, the outputs written again).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import statistics
from pathlib import Path

import torch
from time_to_quality import timed  # noqa: E402  (examples/ on sys.path)

from dipprior import dip, metrics
from dipprior._atomic import atomic_write_text
from dipprior.diffusion import load_pretrained
from dipprior.dip import DIPConfig
from dipprior.experiments import classical_label, plot_psnr_vs_seconds
from dipprior.experiments.data import degrade, load_folder
from dipprior.operators import TASKS, Denoise, classical_start, make_task
from dipprior.pipeline import ClassicalBaseline, DIPInitializedSampler
from dipprior.pipeline.presets import method_configs

NUMBERS = ("seconds", "psnr", "ssim", "mse", "mae", "delta_e")
COLUMNS = ["image", "method", "seconds", "nfe", "t0", "psnr", "ssim", "mse", "mae", "delta_e",
           "source"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of held-out images")
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--merge", nargs="+", metavar="DIR", help="join these runs' rows.csv")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--first", type=int, default=0, help="start at this image (keeps seed + i)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--blur", default="gaussian:2",
                   help="deblur: gaussian:STD or motion:SIZE (a kernel per image from its seed)")
    p.add_argument("--cheap", default="16:500:informed",
                   help="the cheap DIP start: CHANNELS:ITERATIONS[:informed] (informed: the "
                   "classical restoration as the first input channels), or none")
    p.add_argument("--dip64", type=int, default=0,
                   help="iterations of the 64-channel DIP (0: skip those rows)")
    p.add_argument("--reuse", help="curve.csv of an earlier time_to_quality.py run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        rows = []
        for folder in args.merge:
            with open(Path(folder) / "rows.csv", newline="") as f:
                rows += [{**r, **{k: float(r[k]) for k in NUMBERS}, "nfe": int(r["nfe"] or 0)}
                         for r in csv.DictReader(f)]
        order = {name: i for i, name in enumerate(sorted({r["image"] for r in rows}))}
        write(out, sorted(rows, key=lambda r: order[r["image"]]), args)
        return
    if args.task == "denoise" and importlib.util.find_spec("bm3d") is None:
        print("CBM3D rows skipped: the optional bm3d package is not installed (pip install bm3d)",
              flush=True)
    model, scheduler = load_pretrained()
    factory = make_task(args.task, sigma=args.sigma, blur=args.blur)
    images = load_folder(args.data, args.n_images, args.size)
    configs = method_configs(args.task)
    cheap = None
    if args.cheap != "none":
        channels, iterations, *informed = args.cheap.split(":")
        cheap = (int(channels), int(iterations), informed == ["informed"])
    reused = read_reused(args.reuse, args.dip64) if args.reuse else {}
    rows: list[dict] = []
    for i, (name, clean) in enumerate(images.items()):
        if i < args.first:
            continue
        seed = args.seed + i
        op, y = degrade(clean, factory, seed)
        image_rows = restore_one(name, clean, op, y, seed, model, scheduler, configs, args,
                                 cheap, reused.get(name, []))
        rows += image_rows
        print(f"{name}: " + ", ".join(f"{r['method']} {r['psnr']:.2f} ({r['seconds']:.1f} s)"
                                      for r in image_rows), flush=True)
        write(out, rows, args)


def restore_one(name, clean, op, y, seed, model, scheduler, configs, args, cheap,
                reused_rows) -> list[dict]:
    rows: list[dict] = []

    def add(method: str, image: torch.Tensor, seconds: float, result=None) -> None:
        scores = metrics.evaluate(image.detach().float().cpu().clamp(0, 1), clean)
        rows.append({"image": name, "method": method, "seconds": round(seconds, 3),
                     "nfe": getattr(result, "nfe", 0), "t0": getattr(result, "t0", ""),
                     **scores, "source": "this run"})

    if isinstance(op, Denoise):
        try:
            from dipprior.pipeline import CBM3DBaseline
            r, sec = timed(CBM3DBaseline(), y, op)
            add("CBM3D", r.image, sec)
        except ImportError:
            pass
    else:
        r, sec = timed(ClassicalBaseline(), y, op)
        add(classical_label(args.task), r.image, sec)
    for label, method in (("Classical->DDPM", "Classical->DDPM"), ("DiffPIR (noise)", "DDPM")):
        sampler = DIPInitializedSampler(model, scheduler, configs[method], progress=False)
        r, sec = timed(sampler, y, op, seed=seed)
        add(label, r.image, sec, r)
    chain = DIPInitializedSampler(model, scheduler, configs["DIP->DDPM"], progress=False)
    fits = []
    if cheap is not None:
        channels, iterations, informed = cheap
        informed = informed and not isinstance(op, Denoise)
        fits.append((f"DIP{channels}({iterations}{', informed' if informed else ''})",
                     DIPConfig(channels=channels, iterations=iterations, progress=False),
                     informed))
    if args.dip64 and not reused_rows:
        fits.append((f"DIP({args.dip64})", DIPConfig(iterations=args.dip64, progress=False),
                     False))
    for label, cfg, informed in fits:
        start, start_s = timed(classical_start, y, op) if informed else (None, 0.0)
        fitted, fit_s = timed(dip.fit, y, op, config=cfg.replace(seed=seed),
                              input_image=None if start is None else start.clamp(0, 1))
        fit_s += start_s
        add(label, fitted.image, fit_s)
        r, sec = timed(chain, y, op, seed=seed, dip_image=fitted.image)
        add(f"{label}->DDPM", r.image, fit_s + sec, r)
    rows += reused_rows
    default = DIPInitializedSampler(model, scheduler, progress=False)
    r, sec = timed(default, y, op, seed=seed)
    add("Default", r.image, sec, r)
    return rows


def read_reused(path: str, k: int) -> dict[str, list[dict]]:
    """DIP(k) and DIP(k)->DDPM rows of a time_to_quality.py curve.csv, per image."""
    wanted = {"DIP": f"DIP({k})", "DIP(k)->DDPM": f"DIP({k})->DDPM"}
    out: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] in wanted and row["budget"] == str(k):
                out.setdefault(row["image"], []).append({
                    "image": row["image"], "method": wanted[row["method"]],
                    "seconds": float(row["seconds"]), "nfe": row.get("nfe") or 0,
                    "t0": row.get("t0", ""), "source": "reused",
                    **{m: float(row[m]) for m in ("psnr", "ssim", "mse", "mae", "delta_e")}})
    return out


def write(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "rows.csv", buf.getvalue())
    table = metrics.results_table(
        [{"Image": r["image"], "Method": r["method"],
          **{k: r[k] for k in ("psnr", "ssim", "mse", "mae", "delta_e")},
          "NFE": int(r["nfe"] or 0), "Seconds": float(r["seconds"])} for r in rows])
    atomic_write_text(out / "table.md", table.to_markdown() + "\n")
    atomic_write_text(out / "summary.md", summary(rows, args))
    plot(out, rows, args)


def summary(rows: list[dict], args: argparse.Namespace) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    images = list(dict.fromkeys(r["image"] for r in rows))
    psnr = {(r["image"], r["method"]): float(r["psnr"]) for r in rows}
    task = f"{args.task} ({args.blur})" if args.task == "deblur" else args.task
    lines = [f"# {task}: {len(images)} crops of {Path(args.data).name}, {args.size}px, "
             f"seed {args.seed}", "", "| method | mean PSNR | mean seconds | crops |",
             "|---|---|---|---|"]
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        lines.append(f"| {m} | {statistics.mean(float(r['psnr']) for r in rs):.2f} | "
                     f"{statistics.mean(float(r['seconds']) for r in rs):.1f} | {len(rs)} |")
    peer = "CBM3D" if args.task == "denoise" else classical_label(args.task)
    rivals = [m for m in (peer, "DiffPIR (noise)") if m in methods]
    if "Default" in methods and rivals:
        margins = [psnr[(im, "Default")] - max(psnr[(im, m)] for m in rivals) for im in images]
        lines += ["", f"Default minus max({', '.join(rivals)}): mean "
                  f"{statistics.mean(margins):+.2f} dB, >= +0.3 dB on "
                  f"{sum(m >= 0.3 for m in margins)}/{len(margins)} crops, better on "
                  f"{sum(m > 0 for m in margins)}/{len(margins)} (per crop: "
                  + ", ".join(f"{m:+.2f}" for m in margins) + ")"]
        for rival in rivals:
            each = [psnr[(im, "Default")] - psnr[(im, rival)] for im in images]
            lines.append(f"Default minus {rival}: mean {statistics.mean(each):+.2f} dB, better on "
                         f"{sum(m > 0 for m in each)}/{len(each)} crops")
    return "\n".join(lines) + "\n"


def plot(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    points = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        points[m] = [(statistics.mean(float(r["seconds"]) for r in rs),
                      statistics.mean(float(r["psnr"]) for r in rs))]
    plot_psnr_vs_seconds(points, out / "psnr_vs_seconds.png",
                         title=f"{args.task}{f' {args.blur}' if args.task == 'deblur' else ''}"
                               f", {Path(args.data).name}",
                         xlabel="seconds per crop (mean)")


if __name__ == "__main__":
    main()
