"""The budget front per task (``budget="fast"``, ``"balanced"``, ``"best"``) against the classical
peer a user would pick, on held-out or test crops: what each point buys, crop by crop, with its
seconds.

Per crop (128x128 centre crops; image i degraded with seed ``--seed`` + i, its chains seeded the
same): the peer (CBM3D with the true sigma for denoising, from the optional ``bm3d`` package;
else the operator's classical restoration: biharmonic, bicubic, Wiener), each budget point as
``DIPInitializedSampler(model, scheduler, budget=...)`` runs it, and any ``--configs`` (named
refinements of the task's recommended settings, for tuning on held-out crops).  The clean crop
only scores.

    # tune on held-out photos (CBSD432's 16 held out from the prior's training, ImageNet's)
    python examples/front_table.py --data ../shared/data/train/CBSD432 --held-out --n-images 6 \\
        --methods fast --configs 'e8={"ensemble": 8};a20={"adapt": {"iterations": 20}}' \\
        --out runs/front/tune.jsonl
    # the test sets, once
    python examples/front_table.py --data ../shared/data/test/Urban100 --n-images 24 \\
        --out docs/results/front/test_denoise.jsonl
    python examples/front_table.py --summarize docs/results/front/test_denoise.jsonl

Rows are appended to ``--out`` (JSON lines); ``--summarize`` prints a markdown table per data set
and task from such files (means, the difference to the peer and to the point below, with the
crops where it is higher).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from dipprior import metrics
from dipprior.diffusion import load_pretrained
from dipprior.experiments.data import degrade, load_folder
from dipprior.operators import make_task
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pipeline.presets import EFFORTS, recommended_config


def parse_configs(text: str) -> dict[str, dict]:
    """``'name={json};name={json}'`` -> {name: SamplerConfig fields (``adapt`` as a dict)}."""
    out = {}
    for part in filter(str.strip, text.split(";")):
        name, _, fields = part.partition("=")
        out[name.strip()] = json.loads(fields)
    return out


def peer(task: str):
    """The classical method a user would pick instead: (name or None for the operator's
    classical method's, restore(y, op))."""
    if task == "denoise":
        try:
            import bm3d  # noqa: F401

            from dipprior.denoisers import cbm3d
            return "CBM3D", lambda y, op: cbm3d(y, op.noise_sigma)
        except ImportError:
            print("no bm3d package: the peer is the observation itself", flush=True)
    return None, lambda y, op: op.classical(y)


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    model, scheduler = load_pretrained(args.model)
    images = load_folder(args.data, args.n_images, args.size, args.held_out)
    configs = parse_configs(args.configs)
    methods = [m for m in args.methods.split(",") if m]
    peer_name, peer_fn = peer(args.task)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    factory = make_task(args.task, **({"sigma": args.sigma} if args.task == "denoise" else {}))
    for i, (name, clean) in enumerate(images.items()):
        seed = args.seed + i
        op, y = degrade(clean, factory, seed)
        line = [name]
        for method in [*methods, *configs]:
            if method == "peer":
                began = time.perf_counter()
                image, info = peer_fn(y, op), {}
                seconds = time.perf_counter() - began
                label = peer_name or op.classical_name
            else:
                if method in EFFORTS:
                    sampler = DIPInitializedSampler(model, scheduler, budget=method,
                                                    progress=False)
                else:
                    fields = dict(configs[method])
                    if "adapt" in fields:
                        fields["adapt"] = AdaptConfig(**fields["adapt"])
                    sampler = DIPInitializedSampler(
                        model, scheduler, recommended_config(op).replace(**fields),
                        progress=False)
                result = sampler(y, op, seed=seed)
                image, seconds, label = result.image, result.seconds["total"], method
                info = {"nfe": result.nfe, "adapt_iterations": result.adapt_iterations,
                        "adapt_gain": result.adapt_gain}
            scores = metrics.evaluate(image.clamp(0, 1), clean)
            row = {"data": Path(args.data).name, "task": args.task,
                   "sigma": args.sigma if args.task == "denoise" else 0, "image": name,
                   "seed": seed, "method": label, "seconds": seconds, "model": args.model,
                   "threads": torch.get_num_threads(), **info, **scores}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            line.append(f"{label}={scores['psnr']:.2f}/{seconds:.1f}s")
        print(" ".join(line), flush=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _diff(a: list[float], b: list[float]) -> str:
    """The mean difference and on how many crops ``a`` is higher."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return f"{_mean(d):+.2f} ({sum(x > 0 for x in d)}/{len(d)})"


def summarize(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    tables: dict[tuple, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        tables[r["data"], r["task"], r["sigma"]][r["method"]][r["image"]] = r
    for (data, task, sigma), by_method in tables.items():
        names = list(by_method)
        common = set.intersection(*(set(by_method[m]) for m in names))
        order = sorted(common)
        print(f"\n{data}, {task}{f' sigma {sigma:g}' if sigma else ''}, {len(order)} crops\n")
        print("| method | PSNR | SSIM | s per crop | - peer | - the point before |")
        print("|---|---:|---:|---:|---:|---:|")
        first, before = names[0], None
        psnr = {m: [by_method[m][k]["psnr"] for k in order] for m in names}
        for m in names:
            print(f"| {m} | {_mean(psnr[m]):.2f} | "
                  f"{_mean([by_method[m][k]['ssim'] for k in order]):.3f} | "
                  f"{_mean([by_method[m][k]['seconds'] for k in order]):.2f} | "
                  f"{_diff(psnr[m], psnr[first]) if m != first else ''} | "
                  f"{_diff(psnr[m], psnr[before]) if before in EFFORTS and m in EFFORTS else ''} |")
            before = m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--held-out", action="store_true", help="every 27th photo from the 14th")
    p.add_argument("--task", default="denoise")
    p.add_argument("--sigma", type=float, default=25.0, help="denoising noise, 0..255")
    p.add_argument("--n-images", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="peer,fast,balanced,best",
                   help="'peer' and budget names, comma-separated")
    p.add_argument("--configs", default="", help="name=JSON of SamplerConfig fields, ';'-joined")
    p.add_argument("--model", default="cbsd432-small")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="JSON lines, appended")
    p.add_argument("--summarize", nargs="*", help="JSON lines files to summarise instead")
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize)
    elif not (args.data and args.out):
        p.error("--data and --out are needed unless --summarize")
    else:
        run(args)


if __name__ == "__main__":
    main()
