"""Training state: what changes while training, its (de)serialisation, checkpoints, torchrun ranks.

Everything needed to resume exactly -- raw and EMA weights, Adam state, every RNG stream, the loss
history -- goes into one safetensors file (nothing pickled), so a run killed at any point resumes
bitwise from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dipprior._atomic import atomic_folder
from dipprior._distributed import Ranks, init_process_group, rank_world
from dipprior.diffusion import checkpoint as ckpt
from dipprior.diffusion.scheduler import Scheduler

__all__ = ["TrainState", "derive_seed", "read_checkpoint", "setup_distributed",
           "write_checkpoint"]


def setup_distributed(device: torch.device | None) -> Ranks:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL on CUDA), if any."""
    cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    owns = init_process_group(cuda)
    rank, world = rank_world()
    return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", 0)), owns_group=owns)


def derive_seed(seed: int, rank: int, stream: int) -> int:
    # distinct, reproducible streams per (rank, purpose)
    return (seed * 1_000_003 + rank * 7919 + stream * 104_729) % (2**63 - 1)


class TrainState:
    """Everything that changes during training, and its (de)serialisation."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module,
                 scaler: torch.amp.GradScaler | None, g_data: torch.Generator,
                 g_noise: torch.Generator, device: torch.device) -> None:
        self.model, self.optimizer, self.ema, self.scaler = model, optimizer, ema, scaler
        self.g_data, self.g_noise, self.device = g_data, g_noise, device
        self.step = 0
        self.losses: list[float] = []

    # RNG states of this process, as one uint8 vector (same length on every rank)
    def rng_vector(self) -> torch.Tensor:
        parts = [torch.get_rng_state(), self.g_data.get_state(), self.g_noise.get_state()]
        if self.device.type == "cuda":
            parts.append(torch.cuda.get_rng_state(self.device))
        return torch.cat(parts)

    def set_rng_vector(self, vec: torch.Tensor) -> None:
        sizes = [t.numel() for t in (torch.get_rng_state(), self.g_data.get_state(),
                                     self.g_noise.get_state())]
        if self.device.type == "cuda":
            sizes.append(torch.cuda.get_rng_state(self.device).numel())
        if vec.numel() != sum(sizes):
            raise ValueError("saved RNG state does not fit this device; cannot resume exactly")
        parts = torch.split(vec.to(torch.uint8).cpu(), sizes)
        torch.set_rng_state(parts[0].clone())
        self.g_data.set_state(parts[1].clone())
        self.g_noise.set_state(parts[2].clone())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(parts[3].clone(), self.device)

    def to_file(self, rng_per_rank: list[torch.Tensor],
                meta: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors: dict[str, torch.Tensor] = {}
        tensors.update({f"model.{k}": v for k, v in self.model.state_dict().items()})
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt = self.optimizer.state_dict()
        opt_json: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
        for pid, entries in opt["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{name}"] = value
                else:
                    opt_json["state"].setdefault(str(pid), {})[name] = value
        for r, vec in enumerate(rng_per_rank):
            tensors[f"rng.rank{r}"] = vec
        tensors["loss_history"] = torch.tensor(self.losses, dtype=torch.float64)
        state = {**meta, "step": self.step, "world_size": len(rng_per_rank), "optimizer": opt_json,
                 "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None}
        return tensors, {"format": ckpt.FORMAT + ".training_state",
                         "format_version": str(ckpt.FORMAT_VERSION), "state": json.dumps(state)}

    def from_file(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], rank: int,
                  world: int, source: str) -> None:
        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        ckpt.load_state_into(self.model, prefixed("model."), source + " (model.*)")
        ckpt.load_state_into(self.ema, prefixed("ema."), source + " (ema.*)")
        opt_json = state["optimizer"]
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in prefixed("optim.").items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = value
        for pid, entries in opt_json.get("state", {}).items():
            opt_state.setdefault(int(pid), {}).update(entries)
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g
                  for g in opt_json["param_groups"]]
        try:
            self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        except (ValueError, KeyError) as exc:
            raise ValueError(f"optimizer state in {source} does not fit: {exc}") from None
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.losses = tensors["loss_history"].tolist()
        if len(self.losses) != self.step:
            raise ValueError(f"{source}: loss history has {len(self.losses)} entries for step "
                             f"{self.step} (corrupt training state)")
        key = f"rng.rank{rank}"
        if state.get("world_size") == world and key in tensors:
            self.set_rng_vector(tensors[key])
        else:
            warnings.warn(f"{source} was written with world size {state.get('world_size')}, "
                          f"now {world}: RNG streams are re-seeded, so the run will not be "
                          "bitwise identical to an uninterrupted one", stacklevel=3)
            seed = int(state.get("seed", 0))
            torch.manual_seed(derive_seed(seed, rank, 2 + self.step))
            self.g_data.manual_seed(derive_seed(seed, rank, 3 + self.step))
            self.g_noise.manual_seed(derive_seed(seed, rank, 4 + self.step))


def gather_rng(state: TrainState, dd: Ranks) -> list[torch.Tensor]:
    vec = state.rng_vector()
    if not dd.enabled:
        return [vec]
    comm_device = state.device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = vec.to(comm_device)
    out = [torch.empty_like(local) for _ in range(dd.world)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def write_checkpoint(directory: Path, state: TrainState, scheduler: Scheduler,
                      meta: dict[str, Any], dd: Ranks) -> None:
    rngs = gather_rng(state, dd)  # collective: every rank takes part
    if dd.rank != 0:
        return
    tensors, header = state.to_file(rngs, meta)
    files = ckpt.checkpoint_files(state.ema, scheduler, {"step": state.step})
    lines = ["step,loss"] + [f"{i + 1},{v:.8g}" for i, v in enumerate(state.losses)]
    files[ckpt.LOSS_FILE] = ("\n".join(lines) + "\n").encode()
    # state, sampling weights, config and losses are replaced as one unit
    with atomic_folder(directory) as tmp:
        ckpt.save_tensors(tmp / ckpt.STATE_FILE, tensors, header)
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def read_checkpoint(directory: Path, state: TrainState, scheduler: Scheduler,
                     meta: dict[str, Any], dd: Ranks) -> None:
    source = str(directory / ckpt.STATE_FILE)
    tensors, header = ckpt.read_tensors(directory / ckpt.STATE_FILE)
    try:
        saved = json.loads(header["state"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{source} has no readable training-state header") from None
    if saved.get("model") != meta["model"]:
        raise ValueError(f"{source} was trained with model config {saved.get('model')}, "
                         f"but the model passed has {meta['model']}; use the same architecture "
                         "or another checkpoint_dir")
    if saved.get("scheduler") != meta["scheduler"]:
        raise ValueError(f"{source} was trained with scheduler {saved.get('scheduler')}, "
                         f"but the scheduler passed is {meta['scheduler']}")
    before, now = saved.get("args", {}), meta["args"]
    changed = {k: (before.get(k), now.get(k)) for k in {**before, **now}
               if before.get(k) != now.get(k)}
    if changed:
        warnings.warn(f"resuming {source} with changed arguments (saved, now): {changed}",
                      stacklevel=3)
    state.from_file(tensors, saved, dd.rank, dd.world, source)
