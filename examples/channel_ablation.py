"""The seed's ablation done properly: DIP conv channels 16 / 32 / 64 / 128, alone and as DIP->DDPM.

For each channel width the DIP skip hourglass (5 scales, 4 skip channels, input depth 32) is
fitted to every held-out observation (denoising sigma=25 by default) with the same budget and
seed; its output is scored as **DIP** and then used as the start of the shipped diffusion prior's
reverse chain (**DIP->DDPM**, ``--steps`` model evaluations from ``t0``).  Written to ``--out``:

* ``ablation.md`` -- one table per configuration in the seed's format (Image, PSNR, SSIM, MSE,
  MAE, Delta E, with the average) and a summary (parameters, seconds per DIP iteration, averages);
* ``ablation.csv`` -- every row; ``ablation.png`` -- PSNR and seconds/iteration against channels.

CPU (a smoke run of the grid, a few minutes on 2 cores; measured: docs/results.md)::

    python examples/channel_ablation.py --quick

GPU (the full ablation: 128x128 crops of 8 CBSD68 images, 2000 DIP iterations each)::

    python examples/channel_ablation.py --data ../shared/data/test/CBSD68 --n-images 8 \\
        --size 128 --dip-iterations 2000 --channels 16 32 64 128 --steps 10 --out ablation

Image ``i`` (sorted file names, or the order of ``--images``) is degraded with ``seed + i`` and its
DIP networks are initialised with ``seed + i`` for every width, so the widths see the same
noise.  The clean image only scores; it never steers fitting, stopping or ``t0``.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dipprior import dip as dip_module
from dipprior._atomic import atomic_write_bytes, atomic_write_text
from dipprior._tensor import default_device
from dipprior.dip import DIPConfig, build_network
from dipprior.experiments import degrade, load_folder
from dipprior.io import sample_image
from dipprior.metrics import evaluate, results_table
from dipprior.operators import make_task
from dipprior.pipeline import DIPInitializedSampler, parse_t0
from dipprior.pipeline.presets import method_configs

SEED_COLUMNS = ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E"]
DEFAULT_SAMPLES = ("astronaut", "chelsea", "coffee", "motorcycle")
QUICK = {"size": 64, "n_images": 3, "dip_iterations": 300}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", metavar="DIR",
                   help="held-out images (e.g. CBSD68); default: scikit-image sample photos")
    p.add_argument("--images", nargs="+", default=list(DEFAULT_SAMPLES),
                   help="sample photo names when --data is not given")
    p.add_argument("--n-images", type=int, help="first N images (default: all given)")
    p.add_argument("--size", type=int, default=128, help="center crop side (default 128)")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--dip-iterations", type=int, default=2000)
    p.add_argument("--task", default="denoise", choices=["denoise", "inpaint", "sr"])
    p.add_argument("--sigma", type=float, default=25.0, help="denoise: noise std, 0..255")
    p.add_argument("--keep", type=float, default=0.5, help="inpaint: fraction of pixels kept")
    p.add_argument("--factor", type=int, default=4, help="sr: factor")
    p.add_argument("--steps", type=int, help="DIP->DDPM reverse steps (default: the preset)")
    p.add_argument("--t0", help="DIP->DDPM start: int, strength or auto (default: the preset)")
    p.add_argument("--model", metavar="DIR", help="prior checkpoint (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="cpu / cuda (default: CUDA if available)")
    p.add_argument("--out", default="runs/ablation",
                   help="output folder (default runs/ablation, git-ignored)")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run: 64x64 crops, 3 images, 300 DIP iterations")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def load_images(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    if args.data:
        return load_folder(args.data, args.n_images, args.size)
    names = args.images[:args.n_images] if args.n_images else args.images
    return {name: sample_image(name, size=args.size) for name in names}


def parameter_count(config: DIPConfig, shape: tuple[int, ...]) -> int:
    net, _ = build_network(config, 0, shape)
    return sum(p.numel() for p in net.parameters())


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = default_device(args.device)
    if args.model:
        from dipprior.diffusion import load

        model, scheduler = load(args.model, device=device)
    else:
        from dipprior.diffusion import load_pretrained

        model, scheduler = load_pretrained(device=device)
    task = make_task(args.task, sigma=args.sigma, keep=args.keep, factor=args.factor)
    images = load_images(args)
    # the task's tuned DIP->DDPM preset; --steps / --t0 override it when given
    preset = method_configs(args.task)["DIP->DDPM"]
    overrides = {k: v for k, v in (("steps", args.steps),
                                   ("t0", None if args.t0 is None else parse_t0(args.t0)))
                 if v is not None}
    sampler = DIPInitializedSampler(model, scheduler, preset.replace(**overrides),
                                    device=device, progress=False)
    # image i: seed + i, the same draw as dipprior.experiments.compare
    observations = {name: degrade(clean, task, args.seed + i)
                    for i, (name, clean) in enumerate(images.items())}
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for channels in args.channels:
        config = DIPConfig(channels=channels, iterations=args.dip_iterations, device=device,
                           progress=not args.no_progress)
        params = parameter_count(config, next(iter(images.values())).shape)
        wall = cpu = 0.0
        for i, (name, clean) in enumerate(images.items()):
            op, y = observations[name]
            print(f"channels {channels}: {name}", file=sys.stderr, flush=True)
            w0, c0 = time.perf_counter(), time.process_time()
            dip_image = dip_module.fit(y, op, config=config, seed=args.seed + i).image.detach()
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            warm = sampler(y, op, seed=args.seed + i, dip_image=dip_image)
            for method, image, nfe in (("DIP", dip_image.clamp(0, 1), 0),
                                       ("DIP->DDPM", warm.image, warm.nfe)):
                rows.append({"Channels": channels, "Method": method, "Image": name,
                             **evaluate(image.cpu(), clean), "NFE": nfe,
                             "t0": warm.t0 if method == "DIP->DDPM" else None})
        iterations = args.dip_iterations * len(images)
        summary.append({"Channels": channels, "Parameters": params,
                        "s/it (wall)": wall / iterations, "s/it (CPU)": cpu / iterations})
    return {"rows": rows, "summary": summary, "images": list(images), "device": device}


def tables(result: dict[str, Any]) -> tuple[str, Any]:
    """The Markdown report and the full CSV table."""
    rows, summary = result["rows"], result["summary"]
    parts = []
    for s in summary:
        for method in ("DIP", "DIP->DDPM"):
            sub = [{k: r[k] for k in ("Image", "psnr", "ssim", "mse", "mae", "delta_e")}
                   for r in rows if r["Channels"] == s["Channels"] and r["Method"] == method]
            table = results_table(sub, SEED_COLUMNS)
            s[f"{method} PSNR"] = table.rows[-1]["PSNR"]
            s[f"{method} SSIM"] = table.rows[-1]["SSIM"]
            parts += [f"### {s['Channels']} channels, {method}", "", table.to_markdown()]
    head = results_table(
        [{"Image": f"{s['Channels']} ch", **{k: v for k, v in s.items() if k != "Channels"}}
         for s in summary], average=False,
        formats={"Parameters": ",d", "s/it (wall)": ".4f", "s/it (CPU)": ".4f",
                 "DIP PSNR": ".2f", "DIP->DDPM PSNR": ".2f", "DIP SSIM": ".4f",
                 "DIP->DDPM SSIM": ".4f"})
    head.columns[0] = "DIP channels"
    for r in head.rows:
        r["DIP channels"] = r.pop("Image")
    markdown = "\n".join(["### Summary (averages over the images)", "", head.to_markdown(),
                          *parts])
    full = results_table([{**r, "Method": f"{r['Channels']} ch {r['Method']}"} for r in rows],
                         ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE",
                          "t0"], formats={"t0": ".0f"})
    return markdown, full


def plot(summary: list[dict[str, Any]], path: Path) -> Path | None:
    from dipprior._mpl import figure

    fig = figure(figsize=(8, 3), dpi=90)
    if fig is None:
        return None
    ch = [s["Channels"] for s in summary]
    a, b = fig.subplots(1, 2)
    for method, marker in (("DIP", "o"), ("DIP->DDPM", "s")):
        a.plot(ch, [s[f"{method} PSNR"] for s in summary], marker=marker, label=method)
    a.set_xscale("log", base=2)
    a.set_xticks(ch, [str(c) for c in ch])
    a.set_xlabel("DIP channels per scale")
    a.set_ylabel("PSNR (dB)")
    a.legend(fontsize=8)
    b.plot(ch, [s["s/it (CPU)"] for s in summary], marker="o", label="CPU")
    b.plot(ch, [s["s/it (wall)"] for s in summary], marker="^", label="wall")
    b.set_xscale("log", base=2)
    b.set_xticks(ch, [str(c) for c in ch])
    b.set_xlabel("DIP channels per scale")
    b.set_ylabel("seconds per DIP iteration")
    b.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    markdown, full = tables(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python examples/channel_ablation.py " + " ".join(sys.argv[1:] if argv is None
                                                                else argv)
    header = (f"Command: `{command}`  \nImages: {', '.join(result['images'])} ({args.size}x"
              f"{args.size}); task {args.task}; DIP {args.dip_iterations} iterations; "
              f"DIP->DDPM: the {args.task} preset (steps {args.steps or 'preset'}, t0 "
              f"{args.t0 or 'preset'}); seed {args.seed} (image i: "
              f"seed + i).  \nMachine: {platform.machine()}, {torch.get_num_threads()} torch "
              f"threads, device {result['device']}, torch {torch.__version__}; total "
              f"{time.perf_counter() - start:.0f} s wall.\n")
    atomic_write_text(out / "ablation.md", header + "\n" + markdown)
    full.to_csv(out / "ablation.csv")
    figure = plot(result["summary"], out / "ablation.png")
    print(header)
    print(markdown)
    print(f"wrote {out / 'ablation.md'}, {out / 'ablation.csv'}"
          + (f", {figure}" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
