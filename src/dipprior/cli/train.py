"""``dipprior train``: train a diffusion prior on a folder of images (resumes exactly)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dipprior.cli.options import HELP, add_runtime, check_output_folder
from dipprior.diffusion.scheduler import BETA_SCHEDULES, PREDICTION_TYPES

_MODEL_DEFAULTS: dict[str, Any] = {"base_channels": 64, "channel_mults": [1, 2, 2],
                                   "num_res_blocks": 2, "attention_resolutions": [],
                                   "dropout": 0.1}
_SCHED_DEFAULTS: dict[str, Any] = {"beta_schedule": "linear", "prediction_type": "epsilon",
                                   "num_train_timesteps": 1000}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train the diffusion prior on a folder of images", formatter_class=HELP,
        description="Train a diffusion prior (UNet + DDPM schedule) on random patches of the "
        "images in FOLDER. Checkpoints go to --out; if --out already holds one, training "
        "resumes from it exactly (architecture flags may then be omitted). Under `torchrun "
        "--nproc_per_node N` it trains data-parallel.")
    p.add_argument("folder", metavar="FOLDER", help="folder of PNG/JPEG training images")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=100_000, help="total steps")
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--patch-size", type=int, default=64, help="crop side")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="after warm-up: constant, or cosine down to lr/10 at --steps")
    p.add_argument("--warmup", type=int, default=1000, help="linear LR warm-up steps")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the weights")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm, 0 = off")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    p.add_argument("--low-t-fraction", type=float, default=0.0,
                   help="share of timesteps drawn from [0, --low-t-max) instead of [0, T) "
                   "(0: uniform)")
    p.add_argument("--low-t-max", type=int, default=250, help="end of the low-noise range")
    p.add_argument("--rotate", action="store_true", help="random 90-degree rotations")
    p.add_argument("--scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="random rescaling of the source photo (1 1: off)")
    p.add_argument("--saturation", type=float, default=0.0, help="saturation jitter")
    p.add_argument("--brightness", type=float, default=0.0, help="brightness jitter")
    arch = p.add_argument_group("architecture (default: from the checkpoint in --out, if any)")
    arch.add_argument("--base-channels", type=int, help="default 64")
    arch.add_argument("--channel-mults", help="comma list, default 1,2,2")
    arch.add_argument("--num-res-blocks", type=int, help="default 2")
    arch.add_argument("--attention-resolutions",
                      help="comma list of down-sampling factors (1,2,4...), default none")
    arch.add_argument("--dropout", type=float, help="default 0.1")
    arch.add_argument("--beta-schedule", choices=BETA_SCHEDULES,
                      help="default linear")
    arch.add_argument("--prediction-type", choices=PREDICTION_TYPES,
                      help="default epsilon")
    arch.add_argument("--num-train-timesteps", type=int, help="default 1000")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="data, noise and initial-weight seed")
    p.add_argument("--force", action="store_true",
                   help="train into an --out that holds a model without training state "
                   "(it is replaced)")
    add_runtime(p)
    return p


def _int_list(text: str, flag: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be a comma-separated list of ints, got {text!r}") from None


def _requested(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Architecture/schedule values given explicitly on the command line."""
    model = {"base_channels": args.base_channels, "num_res_blocks": args.num_res_blocks,
             "dropout": args.dropout,
             "channel_mults": None if args.channel_mults is None
             else _int_list(args.channel_mults, "--channel-mults"),
             "attention_resolutions": None if args.attention_resolutions is None
             else _int_list(args.attention_resolutions, "--attention-resolutions")}
    sched = {"beta_schedule": args.beta_schedule, "prediction_type": args.prediction_type,
             "num_train_timesteps": args.num_train_timesteps}
    return ({k: v for k, v in model.items() if v is not None},
            {k: v for k, v in sched.items() if v is not None})


def _build(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    from dipprior.diffusion import Scheduler, UNet
    from dipprior.diffusion import checkpoint as ckpt

    model_args, sched_args = _requested(args)
    out = Path(args.out)
    if ckpt.is_checkpoint(out):
        config = ckpt.read_json(out / ckpt.CONFIG_FILE)
        saved_sched = Scheduler.from_config(config["scheduler"])
        for key, value in model_args.items():
            if config["model"].get(key) != value:
                raise ValueError(f"--{key.replace('_', '-')} {value} differs from the checkpoint "
                                 f"in {out} ({config['model'].get(key)}); use another --out")
        for key, value in sched_args.items():
            if getattr(saved_sched, key) != value:
                raise ValueError(f"--{key.replace('_', '-')} {value} differs from the checkpoint "
                                 f"in {out} ({getattr(saved_sched, key)}); use another --out")
        model_config, scheduler = dict(config["model"]), saved_sched
    else:
        model_config = {**_MODEL_DEFAULTS, **model_args}
        scheduler = Scheduler(**{**_SCHED_DEFAULTS, **sched_args})
    torch.manual_seed(args.seed)  # initial weights (DDP broadcasts rank 0's anyway)
    return UNet(**model_config), scheduler


def _say(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # one message per torchrun job
        print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from dipprior.diffusion import Augmentation, TimestepDistribution, train
    from dipprior.diffusion import checkpoint as ckpt

    out = Path(args.out)
    check_output_folder(args.out, "--out")  # a folder it can write, before any work
    if (out / ckpt.WEIGHTS_FILE).exists() and not ckpt.is_checkpoint(out) and not args.force:
        raise ValueError(f"--out: {args.out!r} holds a model without training state (written "
                         "by save() or exported); training would start afresh and replace it. "
                         "Use another --out, or --force")
    model, scheduler = _build(args)
    resumed = ckpt.is_checkpoint(args.out)
    nparams = sum(p.numel() for p in model.parameters())
    _say(f"{'resuming' if resumed else 'training'} UNet {json.dumps(model.config)} "
         f"({nparams / 1e6:.2f}M parameters), {scheduler}")
    result = train(model, scheduler, args.folder, steps=args.steps,
                   batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                   warmup=args.warmup, grad_clip=args.grad_clip or None, amp=args.amp,
                   patch_size=args.patch_size,
                   timesteps=TimestepDistribution(args.low_t_fraction, args.low_t_max),
                   augment=Augmentation(rotate=args.rotate, scale=tuple(args.scale),
                                        saturation=args.saturation, brightness=args.brightness),
                   lr_schedule=args.lr_schedule, checkpoint_dir=args.out,
                   checkpoint_every=args.checkpoint_every, resume=True, seed=args.seed,
                   device=args.device, progress=not args.no_progress)
    tail = result.loss_history[-100:]
    mean = sum(tail) / len(tail) if tail else float("nan")
    _say(f"step {result.step}: mean loss of the last {len(tail)} steps {mean:.5f}; "
         f"{result.seconds:.1f} s; checkpoint in {args.out}")
    return 0
