"""Train, measure and ship the natural-image diffusion prior (``dipprior/weights/cbsd432-small``).

Sub-commands::

    # 1. train (resumes exactly when --out already holds a checkpoint; CPU or GPU)
    python examples/train_prior.py train --data ../shared/data/train/CBSD432 --out runs/prior

    # 2. the prior as a one-step denoiser (sigma=25) on 128x128 center crops of CBSD68
    python examples/train_prior.py evaluate-denoiser --checkpoint runs/prior \\
        --data ../shared/data/test/CBSD68

    # 3. add the current checkpoint's number to the PSNR-vs-steps curve (run it now and then
    #    while training; each run evaluates the snapshot that is there and records its step)
    python examples/train_prior.py curve --checkpoint runs/prior \\
        --data ../shared/data/test/CBSD68 --csv docs/prior_curve.csv

    # 4. ship it: float16 EMA weights + config + model card (with the evaluation and the curve)
    python examples/train_prior.py export --checkpoint runs/prior --name cbsd432-small \\
        --data ../shared/data/test/CBSD68 --kodak ../shared/data/test/Kodak24 \\
        --curve docs/prior_curve.csv

``train`` uses the settings of the shipped prior: a 1.5 M-parameter ``UNet`` (base 32 channels,
multipliers 1,2,2, two residual blocks per level, no attention, dropout 0.1), the linear DDPM
schedule (1000 steps, epsilon prediction), random 64x64 patches of CBSD432 with flips, batch 8,
Adam lr 3e-4 after 500 warm-up steps, gradient clipping 1.0, EMA 0.999, seed 0, a checkpoint
every 250 steps.  It is the same run as::

    dipprior train ../shared/data/train/CBSD432 --out runs/prior --steps 200000 --batch-size 8 \\
        --patch-size 64 --lr 3e-4 --warmup 500 --base-channels 32 --channel-mults 1,2,2 \\
        --num-res-blocks 2 --attention-resolutions none --checkpoint-every 250 --seed 0

The training options of ``dipprior train`` are here too: ``--low-t-fraction`` / ``--low-t-max``
(timesteps weighted towards low noise), ``--rotate``, ``--scale LOW HIGH``, ``--saturation``,
``--brightness`` (patch augmentation) and ``--lr-schedule cosine``; their defaults change nothing.

Why these settings (measured on 2 CPU cores): one step at batch 8 of 64x64 patches costs about
1 s of CPU with this UNet, so a model of this size is what a CPU can train to a useful denoiser
in hours; 64x64 patches cover the receptive field of the three-level UNet (it runs fully
convolutionally on larger images).  On a GPU, raise ``--batch-size`` (64) and ``--steps``;
``torchrun --nproc_per_node N examples/train_prior.py train ...`` trains data-parallel.

The denoising protocol (``dipprior.pretrained``): ``y = x + s n`` with ``s = sigma / 255`` and
``n`` from ``torch.Generator().manual_seed(seed + i)`` for the i-th image in file-name order; the
model sees ``x_t = sqrt(abar_t) (2y - 1)`` at the timestep ``t`` whose noise level
``sqrt((1 - abar_t) / abar_t)`` is closest to ``2s`` (t = 56 for sigma=25 on the linear schedule),
and its x0 prediction, clamped, mapped back to [0, 1], is the estimate.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from dipprior._atomic import atomic_write_text
from dipprior._prior_export import export_pretrained, read_training_state  # maintainers' tool
from dipprior.diffusion import checkpoint as ckpt
from dipprior.experiments import load_folder
from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pretrained import DEFAULT_NAME, evaluate_denoiser, fp16_roundtrip

CURVE_FIELDS = ["step", "psnr", "ssim", "images", "crop", "sigma_255", "seed", "t",
                "checkpoint_time"]
DATA_DESCRIPTION = ("CBSD432 (the 432 colour BSD500 train+val photos, the standard training set "
                    "for CBSD68 denoising)")


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from dipprior.diffusion import Augmentation, Scheduler, TimestepDistribution, UNet, train

    torch.manual_seed(args.seed)  # initial weights, exactly as `dipprior train`
    model = UNet(base_channels=args.base_channels,
                 channel_mults=tuple(int(v) for v in args.channel_mults.split(",")),
                 num_res_blocks=args.num_res_blocks, attention_resolutions=(), dropout=0.1)
    scheduler = Scheduler(num_train_timesteps=1000, beta_schedule="linear",
                          prediction_type="epsilon")
    result = train(model, scheduler, args.data, steps=args.steps, batch_size=args.batch_size,
                   lr=args.lr, warmup=args.warmup, ema_decay=0.999, grad_clip=1.0,
                   patch_size=args.patch_size,
                   timesteps=TimestepDistribution(args.low_t_fraction, args.low_t_max),
                   augment=Augmentation(rotate=args.rotate, scale=tuple(args.scale),
                                        saturation=args.saturation, brightness=args.brightness),
                   lr_schedule=args.lr_schedule, checkpoint_dir=args.out,
                   checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                   progress=not args.no_progress)
    print(f"trained to step {result.step} in {result.seconds:.0f} s; checkpoint in {args.out}")
    return 0


# ----------------------------------------------------------------------------- evaluation


def load_snapshot(directory: Path, device: str | None = None) -> tuple[Any, Any, int | None]:
    """``(model, scheduler, step)`` of a checkpoint that training may be rewriting right now.

    The weights and ``config.json`` are replaced one after the other every N steps, so the step
    is read before and after loading the weights and the read is repeated if they differ.
    """
    for _ in range(5):
        before = ckpt.read_json(directory / ckpt.CONFIG_FILE).get("step")
        model, scheduler = ckpt.load(directory, device=device)
        if ckpt.read_json(directory / ckpt.CONFIG_FILE).get("step") == before:
            return model, scheduler, before
    raise ValueError(f"{directory} keeps changing while it is read; try again")


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model to measure: a checkpoint directory, or a shipped prior by name."""
    if args.checkpoint:
        model, scheduler, step = load_snapshot(Path(args.checkpoint), args.device)
        if args.fp16:
            fp16_roundtrip(model)
        return model, scheduler, f"{args.checkpoint}, step {step}"
    from dipprior.diffusion import load_pretrained

    return (*load_pretrained(args.name, device=args.device), f"pretrained {args.name}")


def _summary(table: Any, images: int, sigma: float, args: argparse.Namespace
             ) -> dict[str, Any]:
    avg = table.rows[-1]
    out = {"images": images, "crop": args.crop, "sigma_255": sigma, "seed": args.seed,
           "t": int(table.rows[0]["t"]), "psnr": float(avg["PSNR"]), "ssim": float(avg["SSIM"]),
           "noisy_psnr": float(avg["Noisy PSNR"])}
    if "CBM3D PSNR" in avg:
        out.update({"cbm3d_psnr": float(avg["CBM3D PSNR"]),
                    "cbm3d_ssim": float(avg["CBM3D SSIM"])})
    adapted = [r for r in table.rows[:-1] if r.get("Adapted PSNR") not in (None, "")]
    if adapted:  # the adapted one step, and the others on the same crops
        def mean(key: str) -> float:
            return sum(float(r[key]) for r in adapted) / len(adapted)

        out["adapted"] = {"images": len(adapted), "psnr": mean("Adapted PSNR"),
                          "ssim": mean("Adapted SSIM"), "seconds": mean("Adapted s"),
                          "onestep_psnr": mean("PSNR"), "default_psnr": mean("Default PSNR")}
        if "CBM3D PSNR" in avg:
            out["adapted"]["cbm3d_psnr"] = mean("CBM3D PSNR")
    return out


def _evaluate(model: Any, scheduler: Any, folder: str, args: argparse.Namespace, *,
              sigma: float | None = None, cbm3d: bool | None = None,
              n_images: int | None = None, adapt_images: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """One-step denoising of the folder's crops at ``sigma`` (default ``--sigma``), with CBM3D
    on the same noisy crops unless ``--no-cbm3d`` (or ``cbm3d=False``), and with the prior
    adapted to each crop first (``--adapt-iterations``) on the first ``adapt_images``."""
    sigma = args.sigma if sigma is None else sigma
    if cbm3d is None:
        cbm3d = None if not getattr(args, "no_cbm3d", False) else False
    if cbm3d is None and importlib.util.find_spec("bm3d") is None:
        cbm3d = False
        print("CBM3D columns skipped: the optional bm3d package is not installed "
              "(pip install bm3d)", flush=True)
    images = load_folder(folder, n_images or args.n_images, args.crop)
    iterations = getattr(args, "adapt_iterations", 0)
    adapt = AdaptConfig(iterations=iterations) if iterations else None
    table = evaluate_denoiser(model, scheduler, images, sigma=sigma / 255, seed=args.seed,
                              cbm3d=cbm3d, cbm3d_cache=args.cbm3d_cache, adapt=adapt,
                              adapt_images=adapt_images, progress=not args.no_progress)
    return table, _summary(table, len(images), sigma, args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, scheduler, source = _load(args)
    for label, folder in (("CBSD68", args.data), ("Kodak24", args.kodak),
                          (args.ood_name, args.ood)):
        if not folder:
            continue
        table, summary = _evaluate(model, scheduler, folder, args, n_images=(
            args.ood_n_images if label == args.ood_name and args.n_images is None else None),
            adapt_images=args.adapt_n_images)
        print(f"\n## {label}: one-step denoising, sigma={args.sigma:g}/255, {args.crop}x"
              f"{args.crop} center crops, seed {args.seed}, t={summary['t']} ({source})\n")
        print(table.to_markdown() if args.per_image else _average_only(table))
        if args.csv:
            path = Path(args.csv)
            out = path if label == "CBSD68" else path.with_name(f"{path.stem}_{label}.csv")
            table.to_csv(out)
            print(f"wrote {out}")
    return 0


def _average_only(table: Any) -> str:
    avg = table.rows[-1]
    return (f"average over {len(table.rows) - 1} images: PSNR {avg['PSNR']:.2f} dB, SSIM "
            f"{avg['SSIM']:.4f}, Delta E {avg['Delta E']:.3f} (noisy input {avg['Noisy PSNR']:.2f}"
            " dB)")


# ----------------------------------------------------------------------------- curve


def read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [dict(row) for row in csv.DictReader(f)]


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: int(r["step"]))
    lines = [",".join(CURVE_FIELDS)]
    for r in rows:
        lines.append(",".join(str(r.get(k, "")) for k in CURVE_FIELDS))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


def _curve_row(step: int, summary: dict[str, Any], mtime: float | None) -> dict[str, Any]:
    return {"step": step, "psnr": f"{summary['psnr']:.4f}", "ssim": f"{summary['ssim']:.4f}",
            **{k: summary[k] for k in ("images", "crop", "sigma_255", "seed", "t")},
            "checkpoint_time": dt.datetime.fromtimestamp(mtime, dt.timezone.utc).isoformat(
                timespec="seconds") if mtime else ""}


def cmd_curve(args: argparse.Namespace) -> int:
    directory = Path(args.checkpoint)
    config_path = directory / ckpt.CONFIG_FILE
    mtime = config_path.stat().st_mtime if config_path.is_file() else None
    model, scheduler, step = load_snapshot(directory, args.device)
    fp16_roundtrip(model)  # measure what would ship
    if step is None:
        step = read_training_state(directory).get("step")
    if step is None:
        print(f"curve: {directory} records no training step", file=sys.stderr)
        return 2
    _, summary = _evaluate(model, scheduler, args.data, args, cbm3d=False)
    path = Path(args.csv)
    rows = [r for r in read_curve(path) if int(r["step"]) != int(step)] + [
        _curve_row(int(step), summary, mtime)]
    write_curve(path, rows)
    print(f"step {step}: PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f} "
          f"({summary['images']} images) -> {path}")
    return 0


def _seconds_per_step(curve: list[dict[str, Any]]) -> str | None:
    """Wall clock per step over the latest stretch of training (consecutive curve points no
    more than an hour apart; a run resumed in another session starts a new stretch)."""
    timed = sorted((int(r["step"]), dt.datetime.fromisoformat(r["checkpoint_time"]))
                   for r in curve if r.get("checkpoint_time"))
    stretch = timed[-1:]
    for step, time in reversed(timed[:-1]):
        if not (0 < (stretch[0][1] - time).total_seconds() <= 3600):
            break
        stretch.insert(0, (step, time))
    if len(stretch) < 2:
        return None
    (s0, t0), (s1, t1) = stretch[0], stretch[-1]
    return (f"{(t1 - t0).total_seconds() / (s1 - s0):.2f} s/step wall clock between steps {s0} "
            f"and {s1} (from checkpoint times)")


# ----------------------------------------------------------------------------- export


def copy_snapshot(directory: Path, dest: Path) -> None:
    """Copy a checkpoint that training may be rewriting into ``dest``, consistently.

    Copies until ``config.json`` and the training state agree on the step and did not change
    while the files were copied.
    """
    names = [ckpt.CONFIG_FILE, ckpt.WEIGHTS_FILE, ckpt.STATE_FILE, ckpt.LOSS_FILE]
    for _ in range(5):
        before = ckpt.read_json(directory / ckpt.CONFIG_FILE).get("step")
        for name in names:
            if (directory / name).is_file():
                shutil.copy2(directory / name, dest / name)  # keeps mtimes
        after = ckpt.read_json(directory / ckpt.CONFIG_FILE).get("step")
        state_step = read_training_state(dest).get("step", before)
        if before == after == ckpt.read_json(dest / ckpt.CONFIG_FILE).get("step") == state_step:
            return
    raise ValueError(f"{directory} keeps changing while it is copied; try again")


def cmd_export(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dipprior-export-") as tmp:
        copy_snapshot(Path(args.checkpoint), Path(tmp))
        return _export(Path(tmp), args)


def _export(directory: Path, args: argparse.Namespace) -> int:
    evaluation = {}
    step = read_training_state(directory).get("step")
    if args.data or args.kodak or args.ood:
        model, scheduler = ckpt.load(directory, device=args.device)
        fp16_roundtrip(model)  # the numbers of the weights as shipped
        for label, folder in (("CBSD68", args.data), ("Kodak24", args.kodak),
                              (args.ood_name, args.ood)):
            if not folder:
                continue
            for sigma in [args.sigma, *args.other_sigmas]:
                key = label if sigma == args.sigma else f"{label}, sigma {sigma:g}"
                main_sigma = sigma == args.sigma
                n_images = None if main_sigma else args.other_n_images
                if label == args.ood_name and (n_images or args.n_images) is None:
                    n_images = args.ood_n_images
                table, evaluation[key] = _evaluate(
                    model, scheduler, folder, args, sigma=sigma, n_images=n_images,
                    adapt_images=args.adapt_n_images if main_sigma
                    else args.adapt_other_n_images or args.adapt_n_images)
                if args.tables:
                    out = Path(args.tables) / f"denoise_{label}_sigma{sigma:g}.csv"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    table.to_csv(out)
                e = evaluation[key]
                print(f"{key}: PSNR {e['psnr']:.2f} dB" + (
                    f" (CBM3D {e['cbm3d_psnr']:.2f} dB)" if "cbm3d_psnr" in e else ""))
    curve = read_curve(Path(args.curve)) if args.curve else []
    if args.curve and "CBSD68" in evaluation and step is not None:
        # the exported step belongs on the curve too (same protocol as `curve`)
        mtime = (directory / ckpt.CONFIG_FILE).stat().st_mtime
        curve = [r for r in curve if int(r["step"]) != int(step)] + [
            _curve_row(int(step), evaluation["CBSD68"], mtime)]
        write_curve(Path(args.curve), curve)
    compute = args.compute
    rate = _seconds_per_step(curve)
    if rate:
        compute = f"{compute}; {rate}"
    training = {"data": args.data_description, "patch_size": args.patch_size,
                "compute": compute, "command": args.command,
                "history_note": args.history_note}
    target = export_pretrained(directory, args.name, root=args.root, training=training,
                               evaluation=evaluation, curve=curve)
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"exported {args.checkpoint} (step {read_training_state(directory).get('step')}) -> "
          f"{target} ({size / 2**20:.1f} MiB: "
          f"{', '.join(sorted(p.name for p in target.iterdir()))})")
    return 0


# ----------------------------------------------------------------------------- CLI


def _eval_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", required=required, metavar="DIR",
                   help="CBSD68 folder (held-out test images)")
    p.add_argument("--kodak", metavar="DIR", help="Kodak24 folder (optional)")
    p.add_argument("--ood", metavar="DIR",
                   help="a test set unlike BSD, e.g. Urban100 (optional)")
    p.add_argument("--ood-name", default="Urban100", help="its label (default %(default)s)")
    p.add_argument("--ood-n-images", type=int, default=24,
                   help="its first N images (default %(default)s)")
    p.add_argument("--adapt-iterations", type=int, default=0,
                   help="also the one step with the prior adapted to each crop first "
                   "(recorrupted-to-recorrupted, this many iterations; 0: not run)")
    p.add_argument("--adapt-n-images", type=int,
                   help="adapt on the first N crops only (default: all)")
    p.add_argument("--adapt-other-n-images", type=int,
                   help="the same at the other noise levels (default: as --adapt-n-images)")
    p.add_argument("--n-images", type=int, help="first N images only (default: all)")
    p.add_argument("--crop", type=int, default=128, help="center-crop side (default 128)")
    p.add_argument("--sigma", type=float, default=25.0, help="noise std in 0..255 (default 25)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first image")
    p.add_argument("--no-cbm3d", action="store_true",
                   help="skip CBM3D on the same crops (default: run it when bm3d is installed)")
    p.add_argument("--cbm3d-cache", metavar="DIR",
                   help="keep CBM3D's outputs here (deterministic; saves re-running it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", help="cpu / cuda (default: CUDA if available)")
    parser.add_argument("--no-progress", action="store_true")
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("train", help="train (or resume) the prior")
    p.add_argument("--data", required=True, metavar="DIR", help="CBSD432 training folder")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="after warm-up: constant, or cosine down to lr/10 at --steps")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--low-t-fraction", type=float, default=0.0,
                   help="share of timesteps drawn from [0, --low-t-max) instead of [0, T) "
                   "(0: uniform)")
    p.add_argument("--low-t-max", type=int, default=250)
    p.add_argument("--rotate", action="store_true", help="random 90-degree rotations")
    p.add_argument("--scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="random rescaling of the source photo (1 1: off)")
    p.add_argument("--saturation", type=float, default=0.0, help="saturation jitter")
    p.add_argument("--brightness", type=float, default=0.0, help="brightness jitter")
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--channel-mults", default="1,2,2")
    p.add_argument("--num-res-blocks", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate-denoiser", help="one-step denoising PSNR of a prior")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="DIR", help="a training checkpoint directory")
    src.add_argument("--name", default=DEFAULT_NAME, help="a shipped prior (default %(default)s)")
    p.add_argument("--fp16", action="store_true",
                   help="round a checkpoint's weights to float16 first, as shipping does")
    p.add_argument("--per-image", action="store_true", help="print the per-image table")
    p.add_argument("--csv", metavar="FILE", help="write the per-image table as CSV")
    _eval_args(p, required=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("curve", help="append the current checkpoint's PSNR to a CSV curve")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--csv", required=True, metavar="FILE", help="e.g. docs/prior_curve.csv")
    _eval_args(p, required=True)
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("export", help="ship a checkpoint into dipprior/weights/NAME")
    p.add_argument("--checkpoint", required=True, metavar="DIR")
    p.add_argument("--name", default=DEFAULT_NAME, help="default %(default)s")
    p.add_argument("--root", metavar="DIR", help="registry folder (default: the package's)")
    p.add_argument("--curve", metavar="FILE", help="the CSV written by `curve`")
    p.add_argument("--patch-size", type=int, default=64, help="for the model card")
    p.add_argument("--data-description", default=DATA_DESCRIPTION, help="for the model card")
    p.add_argument("--compute", default="CPU: 1 torch thread on a shared 2-core x86 VM, no GPU",
                   help="for the model card")
    p.add_argument("--command", default=(
        "dipprior train ../shared/data/train/CBSD432 --out runs/prior-cbsd432 --steps 200000 "
        "--batch-size 8 --patch-size 64 --lr 3e-4 --warmup 500 --base-channels 32 "
        "--channel-mults 1,2,2 --num-res-blocks 2 --attention-resolutions none "
        "--checkpoint-every 250 --seed 0 --threads 2"), help="for the model card")
    p.add_argument("--other-sigmas", type=float, nargs="*", default=[15.0, 50.0],
                   help="also evaluate at these noise levels (default 15 50)")
    p.add_argument("--other-n-images", type=int,
                   help="first N images only at the other noise levels (default: as --n-images)")
    p.add_argument("--tables", metavar="DIR", help="write the per-image tables here as CSV")
    p.add_argument("--history-note", help="for the model card: how the run got here")
    _eval_args(p, required=False)
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if getattr(args, "checkpoint", None) and not Path(args.checkpoint).is_dir():
        print(f"error: --checkpoint {args.checkpoint} is not a directory", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
