"""Handler of ``dipprior train`` (kept here so ``dipprior.cli`` stays small and import-light)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from dipprior.diffusion import checkpoint as ckpt
from dipprior.diffusion.scheduler import Scheduler
from dipprior.diffusion.train import train
from dipprior.diffusion.unet import UNet

_MODEL_DEFAULTS: dict[str, Any] = {"base_channels": 64, "channel_mults": [1, 2, 2],
                                   "num_res_blocks": 2, "attention_resolutions": [],
                                   "dropout": 0.1}
_SCHED_DEFAULTS: dict[str, Any] = {"beta_schedule": "linear", "prediction_type": "epsilon",
                                   "num_train_timesteps": 1000}


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


def _build(args: argparse.Namespace) -> tuple[UNet, Scheduler]:
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


def run_train(args: argparse.Namespace) -> int:
    """Run ``dipprior train``; returns the exit code (2 on bad input)."""
    if args.threads is not None:
        if args.threads < 1:
            print("dipprior train: error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        model, scheduler = _build(args)
        resumed = ckpt.is_checkpoint(args.out)
        nparams = sum(p.numel() for p in model.parameters())
        _say(f"{'resuming' if resumed else 'training'} UNet {json.dumps(model.config)} "
             f"({nparams / 1e6:.2f}M parameters), {scheduler}")
        result = train(model, scheduler, args.folder, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                       warmup=args.warmup, grad_clip=args.grad_clip or None, amp=args.amp,
                       patch_size=args.patch_size, checkpoint_dir=args.out,
                       checkpoint_every=args.checkpoint_every, resume=True, seed=args.seed,
                       device=args.device, progress=not args.no_progress)
    except (ValueError, TypeError) as exc:
        print(f"dipprior train: error: {exc}", file=sys.stderr)
        return 2
    tail = result.loss_history[-100:]
    mean = sum(tail) / len(tail) if tail else float("nan")
    _say(f"step {result.step}: mean loss of the last {len(tail)} steps {mean:.5f}; "
         f"{result.seconds:.1f} s; checkpoint in {args.out}")
    return 0
