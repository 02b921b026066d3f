"""torchrun helpers shared by training and the experiment runner."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


@dataclass
class Ranks:
    """This process's place among the ``torchrun`` workers (``0`` of ``1`` when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_process_group(cuda: bool = False) -> bool:
    """Join the process group ``torchrun`` describes, if any; returns whether this call
    created it (the caller then destroys it).  gloo on CPU, NCCL when ``cuda``."""
    if not dist.is_available() or dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items rank ``rank`` of ``world_size`` processes takes: ``items[rank::world_size]``.

    >>> shard(list(range(7)), 1, 3)
    [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size, got rank={rank}, "
                         f"world_size={world_size}")
    return list(items)[rank::world_size]


def gather(rows: list[T]) -> list[T]:
    """Every rank's ``rows``, concatenated in rank order, on every rank (identity if alone)."""
    _, world = rank_world()
    if world == 1:
        return list(rows)
    parts: list[list[T] | None] = [None] * world
    dist.all_gather_object(parts, list(rows))
    return [row for part in parts for row in (part or [])]
