"""Training the diffusion prior: EMA, warm-up, clipping, AMP, checkpoints, exact resume, DDP."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dipprior._tensor import default_device, to_model_scale
from dipprior.diffusion import checkpoint as ckpt
from dipprior.diffusion.data import Augmentation, PatchDataset
from dipprior.diffusion.scheduler import Scheduler
from dipprior.diffusion.timesteps import TimestepDistribution
from dipprior.diffusion.train_state import (
    Ranks,
    TrainState,
    derive_seed,
    read_checkpoint,
    setup_distributed,
    write_checkpoint,
)
from dipprior.diffusion.unet import UNet
from dipprior.operators import check_image

__all__ = ["train", "TrainResult"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        ema: a copy of the model holding the EMA weights (eval mode) -- use it for sampling.
        loss_history: mean training loss of every step from step 1 (including resumed ones).
        step: the number of optimisation steps done.
        seconds: wall-clock time of this call.
    """

    ema: nn.Module
    loss_history: list[float]
    step: int
    seconds: float


def _draw_batch(data: Any, batch_size: int, generator: torch.Generator,
                shard: list[int]) -> torch.Tensor:
    if isinstance(data, PatchDataset) or hasattr(data, "sample_batch"):
        return data.sample_batch(batch_size, generator, shard)
    picks = torch.randint(0, len(shard), (batch_size,), generator=generator).tolist()
    batch = torch.stack([torch.as_tensor(data[shard[i]]) for i in picks])
    # a user's dataset: 0..255 or [-1, 1] images would train a prior on the wrong scale
    check_image(batch, "data")
    return batch


def _resolve_device(device: torch.device, dd: Ranks) -> torch.device:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dd.local_rank if dd.enabled else torch.cuda.current_device())
    return device


def _learning_rate(step: int, steps: int, lr: float, warmup: int, schedule: str) -> float:
    """The rate of (0-based) ``step``: linear warm-up, then constant or cosine down to lr/10."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))
    return lr


def train(
    model: nn.Module,
    scheduler: Scheduler,
    data: str | os.PathLike | torch.utils.data.Dataset,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    warmup: int = 1000,
    grad_clip: float | None = 1.0,
    amp: bool = False,
    patch_size: int = 64,
    timesteps: TimestepDistribution | None = None,
    augment: Augmentation | None = None,
    lr_schedule: str = "constant",
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` to predict ``scheduler.prediction_type`` from ``x_t``.

    Args:
        model: the network, trained in place (raw weights); a :class:`UNet` when checkpointing.
        scheduler: the noise schedule.
        data: a folder of images (wrapped in :class:`PatchDataset` with ``patch_size``) or a
            dataset of (3, P, P) tensors in [0, 1] (one with ``sample_batch(n, generator,
            indices)`` is sampled through it, others by uniform random index).
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size: images per step *per process*.
        lr: Adam learning rate after a linear warm-up of ``warmup`` steps.
        timesteps: the distribution of training timesteps (default uniform, the DDPM recipe);
            see :class:`TimestepDistribution`.
        augment: patch augmentation when ``data`` is a folder (default: flips only).
        lr_schedule: ``"constant"``, or ``"cosine"``: after warm-up the rate follows
            ``lr * (0.1 + 0.9 * (1 + cos(pi * step / steps)) / 2)``, down to ``lr / 10`` at
            ``steps`` (it depends on ``steps``, so keep ``steps`` fixed across resumes).
        ema_decay: EMA decay; the effective decay is ``min(ema_decay, (1+s)/(10+s))`` at step s.
        grad_clip: max gradient norm (``None`` disables clipping).
        amp: mixed precision (float16 + GradScaler on CUDA, bfloat16 on CPU).
        checkpoint_dir: where checkpoints go (every ``checkpoint_every`` steps and at the end);
            with ``resume=True`` an existing training state there is continued exactly;
            ``resume=False`` starts afresh and overwrites it.
        seed: seeds the data, noise and dropout streams (offset per DDP rank).
        device: ``None`` -> CUDA if available, else CPU.
        callback: called as ``callback(step, loss)`` after every step (and its checkpoint).

    Under ``torchrun --nproc_per_node N`` the model is wrapped in DDP (gloo on CPU, NCCL on
    CUDA), each rank samples its own shard of images with its own seed, and only rank 0 writes.
    The global torch RNG is restored when training returns.

    Example:
        >>> net = UNet(base_channels=32)
        >>> out = train(net, Scheduler(), "images/", steps=1000,
        ...             checkpoint_dir="run")  # doctest: +SKIP
        >>> sample(out.ema, Scheduler(), (4, 3, 64, 64), steps=50)  # doctest: +SKIP
    """
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1),
                             ("warmup", warmup, 0), ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not 0 < lr <= 1:
        raise ValueError(f"lr must be in (0, 1], got {lr}")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"scheduler must be a Scheduler, got {type(scheduler).__name__}")
    timesteps = TimestepDistribution() if timesteps is None else timesteps
    if not isinstance(timesteps, TimestepDistribution):
        raise TypeError(f"timesteps must be a TimestepDistribution, got "
                        f"{type(timesteps).__name__}")
    timesteps.check(scheduler.num_train_timesteps)
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    device = default_device(device)  # checked: a CUDA device needs CUDA
    if checkpoint_dir is not None and not isinstance(model, UNet):
        raise TypeError("checkpointing needs a dipprior UNet model")
    if isinstance(data, (str, os.PathLike)):
        data = PatchDataset(data, patch_size, augment=augment)
        data.check()
    elif augment is not None:
        raise ValueError("augment applies only when data is a folder (augment your own dataset)")
    if len(data) == 0:
        raise ValueError("data is empty")

    started = time.perf_counter()
    dd = setup_distributed(device)
    try:
        dev = _resolve_device(device, dd)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return _train_loop(model, scheduler, data, dev, dd, started, steps=steps,
                               batch_size=batch_size, lr=lr, ema_decay=ema_decay, warmup=warmup,
                               grad_clip=grad_clip, amp=amp, timesteps=timesteps,
                               lr_schedule=lr_schedule, checkpoint_dir=checkpoint_dir,
                               checkpoint_every=checkpoint_every, resume=resume, seed=seed,
                               progress=progress, callback=callback)
    finally:
        if dd.owns_group:
            dist.destroy_process_group()


def _train_loop(model: nn.Module, scheduler: Scheduler, data: Any, dev: torch.device,
                dd: Ranks, started: float, *, steps: int, batch_size: int, lr: float,
                ema_decay: float, warmup: int, grad_clip: float | None, amp: bool,
                timesteps: TimestepDistribution, lr_schedule: str,
                checkpoint_dir: str | os.PathLike | None, checkpoint_every: int, resume: bool,
                seed: int, progress: bool,
                callback: Callable[[int, float], None] | None) -> TrainResult:
    from tqdm.auto import tqdm

    torch.manual_seed(derive_seed(seed, dd.rank, 2))
    model.to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda") if amp and dev.type == "cuda" else None
    g_data = torch.Generator().manual_seed(derive_seed(seed, dd.rank, 0))
    g_noise = torch.Generator(dev).manual_seed(derive_seed(seed, dd.rank, 1))
    state = TrainState(model, optimizer, ema, scaler, g_data, g_noise, dev)
    meta = {"model": model.config if isinstance(model, UNet) else None,
            "scheduler": scheduler.to_config(), "seed": seed,
            "args": {"batch_size": batch_size, "lr": lr, "ema_decay": ema_decay,
                     "warmup": warmup, "grad_clip": grad_clip, "amp": amp}}
    # recorded only when used, so runs from before these options resume without a warning
    if not timesteps.is_uniform:
        meta["args"]["timesteps"] = timesteps.to_config()
    augment = getattr(data, "augment", None)
    if augment is not None and augment != Augmentation():
        meta["args"]["augment"] = augment.to_config()
    if lr_schedule != "constant":
        meta["args"]["lr_schedule"] = lr_schedule
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if directory is not None and resume and ckpt.is_checkpoint(directory):
        read_checkpoint(directory, state, scheduler, meta, dd)

    n = len(data)
    shard = list(range(dd.rank, n, dd.world)) if n >= dd.world else list(range(n))
    net = model
    if dd.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema.parameters()]
    T = scheduler.num_train_timesteps

    bar = tqdm(total=steps, initial=state.step, disable=not progress or dd.rank != 0,
               desc="train", dynamic_ncols=True)
    try:
        while state.step < steps:
            step = state.step
            rate = _learning_rate(step, steps, lr, warmup, lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = rate
            batch = _draw_batch(data, batch_size, g_data, shard).to(dev, non_blocking=True)
            x0 = to_model_scale(batch)
            t = timesteps.sample(x0.shape[0], T, g_noise, dev)
            noise = torch.randn(x0.shape, generator=g_noise, device=dev)
            x_t = scheduler.add_noise(x0, noise, t)
            target = scheduler.training_target(x0, noise, t)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                pred = net(x_t, t)
            loss = F.mse_loss(pred.float(), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            with torch.no_grad():
                decay = min(ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
                for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
                    b_ema.copy_(b)
            logged = loss.detach()
            if dd.enabled:
                dist.all_reduce(logged)
                logged = logged / dd.world
            state.losses.append(float(logged))
            state.step += 1
            bar.update(1)
            if state.step % 10 == 0 or state.step == steps:
                bar.set_postfix(loss=f"{sum(state.losses[-10:]) / len(state.losses[-10:]):.4f}")
            due = state.step % checkpoint_every == 0 or state.step == steps
            if directory is not None and due:
                write_checkpoint(directory, state, scheduler, meta, dd)
            if callback is not None:
                callback(state.step, state.losses[-1])
    finally:
        bar.close()
    if dd.enabled:
        dist.barrier()
    return TrainResult(ema=ema, loss_history=list(state.losses), step=state.step,
                       seconds=time.perf_counter() - started)
