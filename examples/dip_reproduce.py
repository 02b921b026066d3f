"""Reproduce the DIP numbers of ``docs/dip.md``: denoising curves, ES-WMV, inpainting, x4 SR.

Tasks (each writes ``<out>/<task>.json``; ``report`` turns them into Markdown):

- ``denoise``: sigma = 25 (noise added in float, not clipped, generator seeded ``seed + i``) on
  128x128 centre crops of the first three CBSD68 images (sorted file names); ``dip.fit`` with 64
  channels, 3000 iterations, ES-WMV tracking with a patience that never fires, so one run gives
  the whole PSNR curve of the output average (measured against the clean image, for reporting
  only) and the variance curve. ES-WMV's decision (window 100, patience 1000 unless changed) is
  then read off the variance curve with ``wmv_stop_point``; the fit is deterministic, so this is
  exactly what ``fit(early_stopping="wmv")`` returns (``tests/test_dip.py`` checks the equality,
  and ``--verify-es`` runs the real early-stopped fit on the first image).
- ``reference``: the same three noisy images through a line-by-line transcription of the
  reference notebook's loop (``denoising.ipynb`` of DmitryUlyanov/deep-image-prior: Adam 0.01,
  MSE, z ~ U(0, 0.1), reg noise 1/30, exp_weight 0.99, its PSNR-of-the-noisy-fit backtracking)
  over the skip network at the reference width (128 channels), for the peak of its EMA curve.
- ``inpaint``: 50% of the pixels missing (a fixed random pixel mask) on the 4th CBSD68 crop.
- ``sr``: x4 antialiased-bicubic downsampling of the 5th crop; compared with bicubic upsampling.
- ``verify``: the real early-stopped fits (ES-WMV; discrepancy with sigma known; discrepancy
  without an operator, sigma estimated) on the first crop.

Commands used for the numbers in ``docs/dip.md`` (CPU, one thread each, on a shared 2-core VM)::

    python examples/dip_reproduce.py denoise   --data ../shared/data/test/CBSD68 --threads 1
    python examples/dip_reproduce.py reference --data ../shared/data/test/CBSD68 --threads 1
    python examples/dip_reproduce.py inpaint   --data ../shared/data/test/CBSD68 --threads 1
    python examples/dip_reproduce.py sr        --data ../shared/data/test/CBSD68 --threads 1
    python examples/dip_reproduce.py report

All seeds are 0 unless ``--seed`` says otherwise (network n: ``seed``, noise of image i:
``seed + i``, inpainting mask: ``seed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dipprior import dip, metrics
from dipprior._atomic import atomic_write_text
from dipprior.dip.fit import build_network
from dipprior.estimators import estimate_noise_sigma
from dipprior.io import IMAGE_SUFFIXES, center_crop, load_image
from dipprior.operators import Denoise, Inpaint, SuperResolution, random_pixel_mask

SIGMA = 25 / 255


def crops(data: Path, indices: list[int], size: int) -> list[tuple[str, torch.Tensor]]:
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) <= max(indices):
        raise SystemExit(f"--data: {data} holds {len(files)} images, need {max(indices) + 1}")
    return [(files[i].name, center_crop(load_image(files[i]), size)) for i in indices]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(metrics.psnr(a.clamp(0, 1), b))


def noisy_images(args) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The noisy crops of the images ``--images`` (indices into the first three)."""
    out = []
    for i, (name, x) in zip(args.images, crops(args.data, args.images, args.crop), strict=True):
        y = Denoise(SIGMA).degrade(x, generator=torch.Generator().manual_seed(args.seed + i))
        out.append((name, x, y))
    return out


def curve_summary(psnr_curve: list[float]) -> dict:
    peak = max(range(len(psnr_curve)), key=psnr_curve.__getitem__)
    return {"peak_psnr": psnr_curve[peak], "peak_iteration": peak + 1,
            "per_100": [psnr_curve[i] for i in range(99, len(psnr_curve), 100)]}


def task_denoise(args) -> dict:
    rows = []
    for name, x, y in noisy_images(args):
        r = dip.fit(y, Denoise(SIGMA), channels=args.channels, iterations=args.iterations,
                    early_stopping="wmv", wmv_window=args.window, wmv_patience=10**9,
                    ground_truth=x, seed=args.fit_seed, compile=args.compile)
        best, stop = dip.wmv_stop_point(r.history["variance"], args.patience)
        row = {"image": name, "noisy_psnr": psnr(y, x), "seconds": r.seconds,
               "sigma_estimate": float(estimate_noise_sigma(y[None])[0]),
               "restores": r.restores, **curve_summary(r.history["psnr"]),
               "final_psnr": r.history["psnr"][-1],
               "es_best_iteration": None if best is None else best + 1,
               "es_stop_iteration": None if stop is None else stop + 1,
               "es_psnr": None if best is None else r.history["psnr"][best],
               "psnr": r.history["psnr"], "variance": r.history["variance"],
               "loss": r.history["loss"]}
        print(f"{name}: peak {row['peak_psnr']:.2f} dB @ {row['peak_iteration']}, ES-WMV "
              f"{row['es_psnr']} dB (min var @ {row['es_best_iteration']}, stop @ "
              f"{row['es_stop_iteration']}), {r.seconds:.0f} s", flush=True)
        if args.verify_es and not rows:
            es = dip.fit(y, Denoise(SIGMA), channels=args.channels, iterations=args.iterations,
                         early_stopping="wmv", wmv_window=args.window,
                         wmv_patience=args.patience, seed=args.seed, compile=args.compile)
            row["verify_es"] = {"stopped_at": es.stopped_at, "best_iteration": es.best_iteration,
                                "psnr": psnr(es.image, x), "iterations": es.iterations,
                                "seconds": es.seconds}
            print(f"  real ES fit: {row['verify_es']}", flush=True)
        rows.append(row)
    return {"rows": rows}


def task_verify(args) -> dict:
    """Real early-stopped fits on the first crop, to confirm the decisions read off histories."""
    name, x, y = noisy_images(args)[0]
    rows = []
    for rule, extra in (("wmv", {"wmv_window": args.window, "wmv_patience": args.patience}),
                        ("discrepancy", {"discrepancy_window": args.discrepancy_window}),
                        ("discrepancy-blind", {"discrepancy_window": args.discrepancy_window})):
        op = None if rule.endswith("blind") else Denoise(SIGMA)
        r = dip.fit(y, op, channels=args.channels, iterations=args.iterations, seed=args.seed,
                    early_stopping=rule.split("-")[0], compile=args.compile, **extra)
        rows.append({"image": name, "rule": rule, "stopped_at": r.stopped_at,
                     "best_iteration": r.best_iteration, "iterations": r.iterations,
                     "psnr": psnr(r.image, x), "seconds": r.seconds})
        print(rows[-1], flush=True)
    return {"rows": rows}


def reference_fit(x: torch.Tensor, y: torch.Tensor, channels: int, iterations: int, seed: int,
                  compile_: bool) -> dict:
    """The reference notebook's optimisation loop, transcribed (closure + Adam, batch of one)."""
    cfg = dip.DIPConfig(channels=channels)
    net, net_input_saved = build_network(cfg, seed, x.shape)  # torch.manual_seed; net; z
    model = torch.compile(net) if compile_ else net
    noise = net_input_saved.clone()
    img_noisy, img = y[None], x[None]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    out_avg, last_net, psnr_noisy_last, backtracks = None, None, 0.0, 0
    curve = []
    g = torch.Generator().manual_seed(seed + 2**32)
    for i in range(iterations):
        optimizer.zero_grad()
        net_input = net_input_saved + noise.normal_(generator=g) * (1 / 30)
        out = model(net_input)
        out_avg = out.detach() if out_avg is None else out_avg * 0.99 + out.detach() * 0.01
        total_loss = F.mse_loss(out, img_noisy)
        total_loss.backward()
        psnr_noisy = -10 * math.log10(float(F.mse_loss(out.detach(), img_noisy)))
        curve.append(-10 * math.log10(float(F.mse_loss(out_avg.clamp(0, 1), img))))
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}: {curve[-1]:.2f} dB", flush=True)
        if i % 100:  # the notebook's backtracking (psnr_noisy is against the noisy image)
            if psnr_noisy - psnr_noisy_last < -5:
                backtracks += 1
                with torch.no_grad():
                    for new_param, net_param in zip(last_net, net.parameters(), strict=True):
                        net_param.copy_(new_param)
            else:
                last_net = [p.detach().clone() for p in net.parameters()]
                psnr_noisy_last = psnr_noisy
        optimizer.step()
    return {"psnr": curve, "backtracks": backtracks}


def task_reference(args) -> dict:
    rows = []
    for name, x, y in noisy_images(args):
        start = time.perf_counter()
        ref = reference_fit(x, y, args.ref_channels, args.ref_iterations, args.fit_seed,
                            args.compile)
        row = {"image": name, "channels": args.ref_channels,
               "seconds": time.perf_counter() - start, "backtracks": ref["backtracks"],
               **curve_summary(ref["psnr"]), "psnr": ref["psnr"]}
        print(f"{name}: reference {args.ref_channels}ch peak {row['peak_psnr']:.2f} dB @ "
              f"{row['peak_iteration']} ({row['seconds']:.0f} s)", flush=True)
        rows.append(row)
        save(args, "reference", {"rows": rows}, start)  # partial results survive an interrupt
    return {"rows": rows}


def task_inpaint(args) -> dict:
    name, x = crops(args.data, [3], args.crop)[0]
    mask = random_pixel_mask(x.shape[-2:], keep=0.5, generator=torch.Generator().manual_seed(
        args.seed))
    op = Inpaint(mask)
    y = op.degrade(x)
    r = dip.fit(y, op, channels=args.channels, iterations=args.restore_iterations,
                ground_truth=x, seed=args.seed, compile=args.compile)
    row = {"image": name, "degraded_psnr": psnr(y, x), "restored_psnr": psnr(r.image, x),
           "restored_ssim": float(metrics.ssim(r.image.clamp(0, 1), x)),
           "degraded_ssim": float(metrics.ssim(y.clamp(0, 1), x)),
           "iterations": r.iterations, "seconds": r.seconds, "restores": r.restores,
           **curve_summary(r.history["psnr"])}
    print(json.dumps({k: v for k, v in row.items() if k != "per_100"}), flush=True)
    return {"rows": [row]}


def task_sr(args) -> dict:
    name, x = crops(args.data, [4], args.crop)[0]
    op = SuperResolution(4, "bicubic")
    y = op.degrade(x)
    bicubic = F.interpolate(y[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    nearest = F.interpolate(y[None], scale_factor=4, mode="nearest")[0]
    r = dip.fit(y, op, channels=args.channels, iterations=args.restore_iterations,
                ground_truth=x, seed=args.seed, compile=args.compile)
    row = {"image": name, "nearest_psnr": psnr(nearest, x), "bicubic_psnr": psnr(bicubic, x),
           "restored_psnr": psnr(r.image, x),
           "bicubic_psnr_y": float(metrics.psnr(bicubic.clamp(0, 1), x, y_channel=True,
                                                crop_border=4)),
           "restored_psnr_y": float(metrics.psnr(r.image.clamp(0, 1), x, y_channel=True,
                                                 crop_border=4)),
           "bicubic_ssim": float(metrics.ssim(bicubic.clamp(0, 1), x)),
           "restored_ssim": float(metrics.ssim(r.image.clamp(0, 1), x)),
           "iterations": r.iterations, "seconds": r.seconds, "restores": r.restores,
           **curve_summary(r.history["psnr"])}
    print(json.dumps({k: v for k, v in row.items() if k != "per_100"}), flush=True)
    return {"rows": [row]}


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def stopping_rules(den: dict, args) -> list[tuple[str, list[str]]]:
    """Each rule's decision on each recorded run (exactly what the early-stopped fit returns)."""
    meta, rows = den["meta"], den["rows"]
    window, patience = meta["window"], meta["patience"]
    if any("sigma_estimate" not in r for r in rows) and args.data is not None:
        args.crop, args.seed, args.images = meta["crop"], meta["seed"], [0, 1, 2]
        for r, (_, _, y) in zip(rows, noisy_images(args), strict=True):
            r["sigma_estimate"] = float(estimate_noise_sigma(y[None])[0])

    def cell(best: int | None, stop: int | None, r: dict) -> str:
        if best is None:
            return "-"
        p = r["psnr"][best]
        return (f"{'-' if stop is None else stop + 1}: {p:.2f} "
                f"({p - r['peak_psnr']:+.2f})")

    def wmv_cell(r: dict) -> str:
        best, stop = dip.wmv_stop_point(r["variance"], patience)
        return f"{'-' if best is None else best + 1} / " + cell(best, stop, r)

    out = [(f"ES-WMV W={window} P={patience} (min var iter: PSNR)",
            [wmv_cell(r) for r in rows])]
    w = args.discrepancy_window
    out.append((f"discrepancy, sigma known, window {w}",
                [cell(t := dip.discrepancy_stop_point(r["loss"], SIGMA**2, w), t, r)
                 for r in rows]))
    if all("sigma_estimate" in r for r in rows):
        out.append((f"discrepancy, sigma estimated, window {w}",
                    [cell(t := dip.discrepancy_stop_point(r["loss"], r["sigma_estimate"]**2, w),
                          t, r) + f" [sigma^ {255 * r['sigma_estimate']:.1f}]" for r in rows]))
    return out


def task_report(args) -> None:
    def load(task: str) -> dict | None:
        """Merge ``<task>.json`` and ``<task>_<images>.json`` files (runs split by image)."""
        parts = [json.loads(p.read_text()) for p in sorted(args.out.glob(f"{task}*.json"))]
        if not parts:
            return None
        rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["image"])
        return {"rows": rows, "meta": parts[0]["meta"]}

    den, ref, inp, sr, ver = (load(t) for t in ("denoise", "reference", "inpaint", "sr",
                                                 "verify"))
    lines = []
    if den:
        meta = den["meta"]
        lines += [f"Denoising sigma=25, {meta['crop']}px crops, {meta['channels']} channels, "
                  f"{meta['iterations']} iterations, seed {meta['seed']} "
                  f"({meta['machine']}, {meta['threads']} thread(s))", "",
                  "| image | noisy | peak of the average (iter) | at 3000 |", "|---|---|---|---|"]
        for r in den["rows"]:
            lines.append(f"| {r['image']} | {fmt(r['noisy_psnr'])} | {fmt(r['peak_psnr'])} "
                         f"({r['peak_iteration']}) | {fmt(r['final_psnr'])} |")
        lines += ["", "Early stopping (stop iteration, PSNR of the returned average, minus the "
                  "peak), read off the full-run histories:", "",
                  "| rule | " + " | ".join(r["image"] for r in den["rows"]) + " |",
                  "|---" * (1 + len(den["rows"])) + "|"]
        for label, picks in stopping_rules(den, args):
            lines.append(f"| {label} | " + " | ".join(picks) + " |")
        lines += ["", "PSNR of the output average every 100 iterations:", "",
                  "| iter | " + " | ".join(r["image"] for r in den["rows"]) + " |",
                  "|---" * (1 + len(den["rows"])) + "|"]
        for k in range(len(den["rows"][0]["per_100"])):
            lines.append(f"| {100 * (k + 1)} | " + " | ".join(
                fmt(r["per_100"][k]) for r in den["rows"]) + " |")
    if ref:
        lines += ["", f"Reference loop at {ref['meta']['ref_channels']} channels, "
                  f"{ref['meta']['ref_iterations']} iterations:", "",
                  f"| image | peak (iter) | ours {den['meta']['channels'] if den else '?'}ch "
                  "peak | difference | backtracks |",
                  "|---|---|---|---|---|"]
        ours = {r["image"]: r for r in den["rows"]} if den else {}
        for r in ref["rows"]:
            o = ours.get(r["image"])
            lines.append(f"| {r['image']} | {fmt(r['peak_psnr'])} ({r['peak_iteration']}) | "
                         f"{fmt(o and o['peak_psnr'])} | "
                         f"{fmt(o and o['peak_psnr'] - r['peak_psnr'])} | {r['backtracks']} |")
    if ver:
        lines += ["", "Real early-stopped fits (first crop): " + "; ".join(
            f"{v['rule']}: stopped at {v['stopped_at'] + 1 if v['stopped_at'] is not None else '-'}"
            f" (ran {v['iterations']}), image of iteration {v['best_iteration'] + 1}, "
            f"{v['psnr']:.2f} dB" for v in ver["rows"])]
    if sr and "nearest_psnr" in sr["rows"][0]:
        lines += ["", f"Super-resolution x4: the low-resolution input replicated to full size "
                  f"(nearest) {fmt(sr['rows'][0]['nearest_psnr'])} dB"]
    for title, data, base in (("Inpainting, 50% pixels missing", inp, "degraded"),
                              ("Super-resolution x4 (bicubic)", sr, "bicubic")):
        if data:
            r = data["rows"][0]
            lines += ["", f"{title}, {r['image']}, {r['iterations']} iterations: {base} "
                      f"{fmt(r[base + '_psnr'])} dB -> DIP {fmt(r['restored_psnr'])} dB "
                      f"(peak of the curve {fmt(r['peak_psnr'])} @ {r['peak_iteration']}); "
                      f"SSIM {r[base + '_ssim']:.3f} -> {r['restored_ssim']:.3f}"
                      + (f"; Y-PSNR (crop 4) {fmt(r['bicubic_psnr_y'])} -> "
                         f"{fmt(r['restored_psnr_y'])}" if "bicubic_psnr_y" in r else "")]
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "report.md").write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", choices=["denoise", "reference", "inpaint", "sr", "verify", "report"])
    p.add_argument("--data", type=Path, help="folder of test images (CBSD68)")
    p.add_argument("--out", type=Path, default=Path("runs/dip-reproduce"),
                   help="output folder (default runs/dip-reproduce, git-ignored)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--window", type=int, default=dip.DIPConfig().wmv_window)
    p.add_argument("--patience", type=int, default=dip.DIPConfig().wmv_patience)
    p.add_argument("--discrepancy-window", type=int,
                   default=dip.DIPConfig().discrepancy_window)
    p.add_argument("--ref-channels", type=int, default=128)
    p.add_argument("--ref-iterations", type=int, default=3000)
    p.add_argument("--images", type=int, nargs="+", default=[0, 1, 2],
                   help="denoise/reference: which of the first three crops (to split runs)")
    p.add_argument("--restore-iterations", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-seed", type=int, default=None,
                   help="network seed for denoise/reference (default --seed; noise keeps --seed)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--verify-es", action="store_true",
                   help="denoise: also run the real early-stopped fit on the first image")
    args = p.parse_args()
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.fit_seed is None:
        args.fit_seed = args.seed
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.task == "report":
        task_report(args)
        return
    if args.data is None or not args.data.is_dir():
        raise SystemExit("--data: a folder of test images is required (e.g. CBSD68)")
    start = time.perf_counter()
    save(args, args.task, globals()[f"task_{args.task}"](args), start)


def save(args, task: str, result: dict, start: float) -> None:
    """Write ``<out>/<task>.json`` atomically, with the run's settings and machine."""
    result["meta"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["meta"] |= {"machine": f"{platform.machine()} {os.cpu_count()} cpus, torch "
                                  f"{torch.__version__}", "threads": torch.get_num_threads(),
                       "total_seconds": time.perf_counter() - start}
    suffix = "" if args.images == [0, 1, 2] or task not in ("denoise", "reference") else (
        "_" + "_".join(map(str, args.images)))
    atomic_write_text(args.out / f"{task}{suffix}.json", json.dumps(result))


if __name__ == "__main__":
    main()
