"""PSNR against wall-clock seconds: DIP alone (its anytime curve), DIP(k)->DDPM for several DIP
budgets k, DIP stopped blindly by the prior, Observation->DDPM, DDPM from noise and CBM3D.

One DIP fit per image runs the full ``--dip-iterations`` (its PSNR curve is recorded against the
clean image for scoring only); the running average is kept at each budget in ``--budgets`` and
at the iteration where the prior-supervised rule (``early_stopping="reference"``: distance to the
prior's own restoration of the observation, patience ``--patience``) would have stopped, and
each is handed to the DIP->DDPM chain.  A method's seconds are everything it needs: DIP up to its
budget, the reference chain where the rule is used, and the reverse chain.  Nothing but the score
looks at the clean image.

    python examples/time_to_quality.py --data ../shared/data/test/CBSD68 --n-images 8 \\
        --task denoise --out results/ttq_denoise25

writes ``curve.csv`` (image, method, budget, seconds, psnr and the other metrics),
``dip_curves.csv`` (DIP's PSNR and seconds every 10 iterations), ``summary.md`` and
``time_to_quality.png`` (mean PSNR against mean seconds).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time
from pathlib import Path

import torch

from dipprior import dip, metrics
from dipprior._atomic import atomic_write_text
from dipprior.diffusion import load_pretrained
from dipprior.dip import DIPConfig, ReferenceDistance
from dipprior.experiments.data import degrade, load_folder
from dipprior.experiments.plots import plot_psnr_vs_seconds
from dipprior.operators import TASKS, Denoise, make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.presets import method_configs


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of held-out images")
    p.add_argument("--model", default=None, help="prior (default: the shipped one)")
    p.add_argument("--n-images", type=int, default=8,
                   help="the first N images of the sorted folder (with --first F: F..N-1)")
    p.add_argument("--first", type=int, default=0,
                   help="skip the images before this index (image i keeps seed + i)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--task", choices=TASKS, default="denoise")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--dip-iterations", type=int, default=2000)
    p.add_argument("--dip-channels", type=int, default=64)
    p.add_argument("--autocast", action="store_true", help="DIP in bfloat16 autocast")
    p.add_argument("--budgets", default="100,200,300,500,700,1000,1500,2000",
                   help="DIP iterations handed to DIP(k)->DDPM")
    p.add_argument("--patience", type=int, default=DIPConfig().reference_patience)
    p.add_argument("--configs", default=None,
                   help="JSON {method: SamplerConfig fields} replacing the presets' settings")
    p.add_argument("--no-cbm3d", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not 0 <= args.first < args.n_images:
        p.error(f"--first: {args.first} leaves no image of --n-images {args.n_images} "
                f"(images --first .. --n-images - 1 run)")
    return args


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), its seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, scheduler = load_pretrained(args.model)
    factory = make_task(args.task, sigma=args.sigma, keep=args.keep, factor=args.factor,
                        box=args.box)
    images = load_folder(args.data, args.n_images, args.size)
    configs = method_configs(args.task)
    for name, fields in (json.loads(args.configs) if args.configs else {}).items():
        configs[name] = configs[name].replace(**fields)
    budgets = sorted({int(b) for b in args.budgets.split(",")} | {args.dip_iterations})
    budgets = [b for b in budgets if b <= args.dip_iterations]
    dip_cfg = DIPConfig(channels=args.dip_channels, iterations=args.dip_iterations,
                        autocast=args.autocast, progress=False)
    cbm3d = None
    if not args.no_cbm3d:
        try:
            from dipprior.pipeline import CBM3DBaseline
            cbm3d = CBM3DBaseline()
        except ImportError:
            if args.task == "denoise":
                print("CBM3D rows skipped: the optional bm3d package is not installed "
                      "(pip install bm3d)", flush=True)
    rows: list[dict] = []
    curves: list[dict] = []
    for i, (name, clean) in enumerate(images.items()):
        if i < args.first:
            continue
        image_rows, image_curve = restore_one(name, clean, args.seed + i, factory, model,
                                              scheduler, configs, dip_cfg, budgets, cbm3d,
                                              args.patience)
        rows += image_rows
        curves += image_curve
        print(f"{name}: " + ", ".join(
            f"{row['method']}{'@' + str(row['budget']) if row['budget'] != '' else ''} "
            f"{row['psnr']:.2f}" for row in image_rows), flush=True)
        write(out, rows, curves, args)


class DIPWatch:
    """The fit's callback: the running average at each budget and where the prior-supervised
    rule stops (the fit itself runs on to the last budget for DIP's whole curve)."""

    def __init__(self, reference: torch.Tensor, patience: int, budgets: list[int]) -> None:
        self.rule = ReferenceDistance(reference[None], patience, torch.device("cpu"))
        self.budgets, self.began = set(budgets), time.perf_counter()
        self.kept: dict[int, tuple[torch.Tensor, float]] = {}
        self.seconds: dict[int, float] = {}
        self.blind: dict[str, object] = {}

    def __call__(self, state) -> None:
        k, now = state.iteration + 1, time.perf_counter() - self.began
        image = state.image.detach().float().cpu()
        self.rule.update(state.iteration, None, None, image)
        if not self.blind and bool(self.rule.stopped[0]):
            self.blind_stop(now)
        if k in self.budgets:
            self.kept[k] = (image[0].clone(), now)
        if k % 10 == 0:
            self.seconds[k] = now

    def blind_stop(self, now: float) -> None:
        self.blind.update(iteration=int(self.rule.best_iteration[0]) + 1,
                          image=self.rule.best_image[0].clone(), seconds=now)


def restore_one(name, clean, seed, factory, model, scheduler, configs, dip_cfg, budgets, cbm3d,
                patience) -> tuple[list[dict], list[dict]]:
    """Every method on one image -> (rows, DIP curve points)."""
    op, y = degrade(clean, factory, seed)
    rows: list[dict] = []

    def add(method: str, image: torch.Tensor, seconds: float, budget: int | str = "",
            **extra) -> None:
        scores = metrics.evaluate(image.detach().float().cpu(), clean)
        rows.append({"image": name, "method": method, "budget": budget,
                     "seconds": round(seconds, 3), **scores, **extra})

    if cbm3d is not None and isinstance(op, Denoise):
        result, sec = timed(lambda: cbm3d(y, op))
        add("CBM3D", result.image if hasattr(result, "image") else result, sec)
    for method in ("DDPM", "Observation->DDPM"):
        sampler = DIPInitializedSampler(model, scheduler, configs[method], progress=False)
        r, sec = timed(lambda s=sampler: s(y, op, seed=seed))
        add(method, r.image, sec, nfe=r.nfe)
    reference, reference_seconds = r.image, sec  # the observation chain's restoration

    watch = DIPWatch(reference, patience, budgets)
    result = dip.fit(y, op, config=dip_cfg.replace(seed=seed), ground_truth=clean,
                     callback=watch)
    psnrs = result.history["psnr"]
    if not watch.blind:  # the rule never fired: it returns its best so far
        watch.blind_stop(watch.kept[max(budgets)][1])
    blind = watch.blind
    peak = max(range(len(psnrs)), key=psnrs.__getitem__)
    for k, (image, sec) in watch.kept.items():
        add("DIP", image, sec, k)
    add("DIP (blind stop)", blind["image"], blind["seconds"] + reference_seconds,
        blind["iteration"])
    rows.append({"image": name, "method": "DIP peak (oracle)", "budget": peak + 1,
                 "seconds": "", "psnr": psnrs[peak]})
    chain = DIPInitializedSampler(model, scheduler, configs["DIP->DDPM"], progress=False)
    for k, (image, sec) in watch.kept.items():
        r, extra = timed(lambda d=image: chain(y, op, seed=seed, dip_image=d))
        add("DIP(k)->DDPM", r.image, sec + extra, k, nfe=r.nfe, t0=r.t0)
    r, extra = timed(lambda: chain(y, op, seed=seed, dip_image=blind["image"]))
    add("DIP(blind)->DDPM", r.image, blind["seconds"] + reference_seconds + extra,
        blind["iteration"], nfe=r.nfe, t0=r.t0)
    curve = [{"image": name, "iteration": k, "seconds": round(sec, 3),
              "psnr": round(psnrs[k - 1], 4)} for k, sec in sorted(watch.seconds.items())]
    return rows, curve


def write(out: Path, rows: list[dict], curves: list[dict], args: argparse.Namespace) -> None:
    keys = ["image", "method", "budget", "seconds", "psnr", "ssim", "mse", "mae", "delta_e",
            "nfe", "t0"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "curve.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["image", "iteration", "seconds", "psnr"])
    w.writeheader()
    w.writerows(curves)
    atomic_write_text(out / "dip_curves.csv", buf.getvalue())
    # mean over images of each (method, budget)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        key = (r["method"], str(r["budget"]) if r["method"] in ("DIP", "DIP(k)->DDPM") else "")
        groups.setdefault(key, []).append(r)
    lines = [f"# time to quality: {args.task}, {len({r['image'] for r in rows})} images, "
             f"{args.size}px, DIP {args.dip_channels} ch, seed {args.seed}", "",
             "| method | DIP iterations | mean seconds | mean PSNR |", "|---|---|---|---|"]
    points: dict[str, list[tuple[float, float]]] = {}
    for (method, budget), rs in groups.items():
        ps = statistics.mean(r["psnr"] for r in rs)
        secs = [r["seconds"] for r in rs if r["seconds"] != ""]
        sec = statistics.mean(secs) if secs else float("nan")
        its = budget or (f"mean {statistics.mean(r['budget'] for r in rs):.0f}"
                         if all(isinstance(r["budget"], int) for r in rs) else "")
        lines.append(f"| {method} | {its} | {sec:.1f} | {ps:.2f} |")
        points.setdefault(method, []).append((sec, ps))
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    plot_psnr_vs_seconds(points, out / "time_to_quality.png",
                         xlabel="seconds (mean per image)")


if __name__ == "__main__":
    main()
