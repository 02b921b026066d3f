"""The one experiment runner: images -> degrade -> work -> rows, sharded under torchrun.

Every experiment (compare, quality vs NFE, the t0 ablation, the demo) is a function of one
degraded image that returns rows; :func:`run_over_images` shards the images over ``torchrun``
processes (rank ``r`` of ``w`` takes images ``r, r + w, ...``), degrades image ``i`` with
``seed + i`` and gathers every rank's rows in image order.  :class:`DIPCache` keeps DIP fits on
disk so several experiments fit each observation once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dipprior._distributed import gather, init_process_group, rank_world, shard
from dipprior._tensor import default_device
from dipprior.experiments.data import Images, OperatorFactory, degrade, prepare_images
from dipprior.operators import Operator
from dipprior.pipeline import fit_dip

__all__ = ["Case", "DIPCache", "fit_dip_cached", "init_distributed", "run_over_images"]


def init_distributed() -> tuple[int, int]:
    """Join the ``torchrun`` process group (gloo) if launched by it -> ``(rank, world_size)``.

    Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) nothing happens: ``(0, 1)``.
    gloo carries the gathered rows (Python objects) on CPU and GPU machines alike.
    """
    init_process_group(cuda=False)
    return rank_world()


@dataclass(frozen=True)
class Case:
    """One degraded image: its position, name, clean image, operator, observation and seed."""

    index: int
    name: str
    clean: torch.Tensor
    operator: Operator
    observation: torch.Tensor
    seed: int


def run_over_images(images: Images, operator: Operator | OperatorFactory, seed: int,
                    work: Callable[[Case], list[dict[str, Any]]], *, progress: bool = True,
                    desc: str = "images") -> list[dict[str, Any]]:
    """``work(case)`` for every image (this rank's share), rows gathered in image order."""
    from tqdm.auto import tqdm

    items = list(enumerate(prepare_images(images)))
    rank, world = rank_world()
    rows = []
    for index, (name, clean) in tqdm(shard(items, rank, world), disable=not progress,
                                     desc=f"{desc}[{rank}]" if world > 1 else desc):
        op, y = degrade(clean, operator, seed + index)
        case = Case(index, name, clean, op, y, seed + index)
        rows += [{"_index": index, "_order": order, **row}
                 for order, row in enumerate(work(case))]
    rows = sorted(gather(rows), key=lambda r: (r["_index"], r["_order"]))
    return [{k: v for k, v in r.items() if k not in ("_index", "_order")} for r in rows]


class DIPCache:
    """DIP reconstructions on disk, so that several experiments fit each observation once.

    The key hashes the observation's bytes, the DIP config and the seed: a hit is exactly what
    a new (deterministic) fit would return on the same device.  Entries are safetensors files
    with the fit's seconds and iterations in the metadata (the seconds are reported as the
    method's DIP time).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def key(self, observation: torch.Tensor, config: Any, seed: int) -> str:
        h = hashlib.sha256()
        h.update(observation.detach().cpu().float().contiguous().numpy().tobytes())
        if dataclasses.is_dataclass(config):  # the progress bar does not change the result
            config = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
        h.update(repr((tuple(observation.shape), config, seed)).encode())
        return h.hexdigest()[:32]

    def get(self, key: str) -> tuple[torch.Tensor, float, int | None] | None:
        from dipprior.diffusion.checkpoint import read_tensors

        path = self.directory / f"{key}.safetensors"
        if not path.is_file():
            return None
        tensors, meta = read_tensors(path)
        iterations = int(meta["iterations"]) if meta.get("iterations") else None
        return tensors["image"], float(meta.get("seconds", 0.0)), iterations

    def put(self, key: str, image: torch.Tensor, seconds: float,
            iterations: int | None) -> None:
        from dipprior.diffusion.checkpoint import save_tensors

        save_tensors(self.directory / f"{key}.safetensors", {"image": image},
                     {"seconds": repr(float(seconds)), "iterations": str(iterations or "")})

    @classmethod
    def of(cls, cache: DIPCache | str | os.PathLike | None) -> DIPCache | None:
        """``cache`` itself, a cache in the folder it names, or None."""
        return cache if cache is None or isinstance(cache, DIPCache) else cls(cache)


def fit_dip_cached(y: torch.Tensor, op: Operator, config: Any, seed: int,
                   cache: DIPCache | None, device: str | torch.device | None,
                   progress: bool) -> tuple[torch.Tensor, float]:
    """A DIP fit (or its cached copy) -> ``(image, seconds of the original fit)``."""
    if config is None or isinstance(config, Mapping):
        from dipprior.pipeline.plan import dip_stage

        config = dip_stage(config, op)  # the operator's default stage, as the sampler's
    key = cache.key(y, config, seed) if cache is not None else None
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit[0], hit[1]
    start = time.perf_counter()
    image, result = fit_dip(y, op, config, seed=seed,
                            device=None if device is None else default_device(device),
                            progress=progress)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.put(key, image, seconds, getattr(result, "iterations", None))
    return image, seconds
