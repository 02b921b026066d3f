"""``restore DIR`` under ``torchrun``: the images split across ranks, one metrics file at the end.

Rank ``r`` of ``w`` takes images ``r, r + w, ...`` of the sorted folder (the split depends on the
folder alone, so a rank never waits for another's files) on its own device (``cuda:LOCAL_RANK``
when CUDA is used), writes its own outputs, and keeps its metrics rows in ``metrics.rank<r>.csv``
(rewritten after every image, so an interrupted run keeps them).  At the end every rank meets
at a barrier and rank 0 merges all rows into ``metrics.csv`` and removes the parts.  A run
resumes as a single-process run does: finished images are skipped, and the parts an
interrupted run left behind are read back.  gloo carries the few Python objects exchanged, on
CPU and GPU machines alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dipprior._distributed import Ranks, gather, init_process_group, rank_world

PART = "metrics.rank{rank}.csv"


def join() -> Ranks:
    """Join the process group ``torchrun`` describes (gloo), if any."""
    owns = init_process_group(cuda=False)
    rank, world = rank_world()
    return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", "0")), owns)


def rank_device(device: str | None, ranks: Ranks) -> str | None:
    """``--device`` for this rank: with several ranks, CUDA (asked for, or found) is this
    rank's GPU, ``cuda:LOCAL_RANK`` (modulo the GPUs seen); anything else as given."""
    if not ranks.enabled:
        return device
    import torch

    if device in (None, "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return device


def agree(error: Exception | None, ranks: Ranks) -> None:
    """Raise on every rank the first rank's error from the checks before any work (so no rank
    starts while another has refused); nothing when alone and ``error`` is None."""
    errors = gather([None if error is None else str(error)]) if ranks.enabled else [error]
    if error is not None and not ranks.enabled:
        raise error
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise ValueError(first)


def part_path(out: Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its metrics rows while it works."""
    return out / PART.format(rank=rank)


def parts(out: Path) -> list[Path]:
    """The metrics parts in ``out`` (of this run or an interrupted one, any world size)."""
    return sorted(out.glob(PART.format(rank="*"))) if out.is_dir() else []


def finish(ranks: Ranks, restored: int) -> int:
    """Wait for every rank; the number of images restored by all of them."""
    if not ranks.enabled:
        return restored
    import torch.distributed as dist

    total = sum(gather([restored]))
    dist.barrier()
    return total


def leave(ranks: Ranks, done: bool = True) -> None:
    """Leave the process group this command created; when ``done`` (no rank failed), after
    every rank got here, so that no rank tears its connections down under another's feet."""
    if ranks.owns_group:
        import torch.distributed as dist

        if done:
            dist.barrier()
        dist.destroy_process_group()


def merged(rows: dict[str, dict[str, Any]], more: list[dict[str, dict[str, Any]]]
           ) -> dict[str, dict[str, Any]]:
    """``rows`` updated with each of ``more`` in turn (a later row for an image wins)."""
    out = dict(rows)
    for part in more:
        out.update(part)
    return out
