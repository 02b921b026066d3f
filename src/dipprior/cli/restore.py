"""``dipprior restore``: restore one image, or every image of a folder (DIP -> diffusion prior).

A folder is restored image by image (sorted file names, image ``i`` seeded with ``seed + i``)
into the ``--out`` folder: ``<stem>.png``, ``<stem>_dip.png`` when DIP ran, and with
``--simulate`` a ``metrics.csv``.  It is resumable: an image whose ``<stem>.png`` exists is
skipped and its metrics row kept.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from dipprior.cli.options import (
    HELP,
    add_dip,
    add_runtime,
    add_sampler,
    add_task,
    check_output,
    load_prior,
)
from dipprior.cli.restore_files import (
    METRICS,
    check_out_folder,
    folder_images,
    number,
    output_names,
    read_metrics,
    write_metrics,
)
from dipprior.cli.restore_setup import (
    check_size,
    check_time_limit,
    degrade_like,
    inpaint_windows,
    keep_known,
    large_photo_speed,
    like_input,
    make_sampler,
    output_bits,
    plan_cost,
    real_operator,
    sampler_settings,
    task_from,
    tile_size,
)
from dipprior.pipeline.config import INITS
from dipprior.pipeline.plan import settings_use_dip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "restore", help="restore one image or a folder (DIP -> diffusion prior)",
        formatter_class=HELP,
        description="Restore IMAGE, an observation (noisy image; image with holes plus --mask; "
        "low-resolution image; blurred image plus --kernel or --blur), with DIP-initialised "
        "diffusion. With --simulate, IMAGE is a "
        "clean image that is degraded first (seeded) and the result is scored. When IMAGE is a "
        "folder, every image in it is restored (sorted by name, image i seeded with --seed + i) "
        "into the folder --out: <name>.png, <name>_dip.png when DIP ran, and with --simulate "
        "metrics.csv. Images whose <name>.png already exists are skipped, so an interrupted "
        "run resumes.")
    p.add_argument("image", metavar="IMAGE", help="the observation (or a clean image with "
                   "--simulate), or a folder of them")
    add_task(p, real_images=True)
    add_sampler(p)
    add_dip(p)
    p.add_argument("--simulate", action="store_true",
                   help="IMAGE is clean: degrade it (--sigma/--keep/--factor/--blur) and report "
                   "PSNR")
    p.add_argument("--init", choices=INITS,
                   help="start of the reverse chain (default: the task's preset; auto: the "
                   "observation for denoising, the classical restoration otherwise: "
                   "biharmonic for holes, bicubic for sr, Wiener for deblur)")
    p.add_argument("--budget", metavar="SECONDS_OR_EFFORT",
                   help="pick the start and chain from the measured quality-time front: "
                   "seconds per image on a 2-core CPU (scaled from 128x128 by the pixel "
                   "count) or an effort: fast, balanced, best (docs/results.md)")
    p.add_argument("--no-guidance", action="store_true", help="plain SDEdit, no data term")
    p.add_argument("--tile", default="auto", metavar="PIXELS",
                   help="restore in overlapping tiles of this side, blended without seams "
                   "(tasks whose operator can be cut into tiles); auto: 512 "
                   "above 1024x1024 pixels; 0: never")
    p.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles")
    p.add_argument("--context", type=int, default=32, metavar="PIXELS",
                   help="noise-free inpainting of a photo in tiles: known pixels around each "
                   "hole in its window (only windows around the holes are restored, no side "
                   "longer than --tile; the rest is copied)")
    p.add_argument("--time-limit", type=float, default=3600, metavar="SECONDS",
                   help="refuse, before any work, an image whose estimated time is longer")
    p.add_argument("--save-dip", metavar="PNG", help="single IMAGE: also write the DIP image "
                   "here (a folder always gets <name>_dip.png in --out)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output image OUT.png (atomic); the output folder when IMAGE is a "
                   "folder (created)")
    p.add_argument("--seed", type=int, default=0,
                   help="degradation, DIP and noise seed (a folder: image i uses seed + i)")
    add_runtime(p)
    return p


def run(args: argparse.Namespace) -> int:
    import os

    if Path(args.image).is_dir():
        return _run_folder(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0:
        print(f"rank {os.environ['RANK']}: one IMAGE is restored by rank 0 alone (a folder is "
              "split across ranks)")
        return 0
    from dipprior.io import load_image, save_image
    from dipprior.metrics import evaluate

    check_time_limit(args)
    check_output(args.out, "--out")
    if Path(args.out).resolve() == Path(args.image).resolve():
        raise ValueError(f"--out: {args.out!r} is the input image; write elsewhere")
    if args.save_dip:
        check_output(args.save_dip, "--save-dip")
        if Path(args.save_dip).resolve() in (Path(args.out).resolve(),
                                             Path(args.image).resolve()):
            raise ValueError(f"--save-dip: {args.save_dip!r} is --out or the input image")
    task = task_from(args)
    settings = sampler_settings(args)
    image = load_image(args.image)
    check_size(image, "IMAGE")
    clean = None
    note = ""
    if args.simulate:
        clean = image
        op, observation = degrade_like(clean, task, args.seed)
    else:
        (op, note), observation = real_operator(task, image, args.seed), image
    tile = tile_size(args, image, op)
    windows = inpaint_windows(args, observation, op, tile)
    if (tile or windows is not None) and args.save_dip:
        raise ValueError("--save-dip: not available when the image is restored in tiles or in "
                         "windows around the holes")
    sampler = make_sampler(args, settings, *load_prior(args),
                           progress=not tile and windows is None)
    print(plan_cost(args, observation, op, sampler, tile, windows), flush=True)
    if windows is not None or tile:
        return _run_tiled(args, sampler, observation, op, image, clean, note, tile, windows)
    result = keep_known(sampler(observation, op, seed=args.seed), observation, op)
    save_image(like_input(result.image, image, op), args.out,
               bits=output_bits(args.image, args.out))
    if args.save_dip and result.dip_image is not None:
        save_image(result.dip_image.clamp(0, 1), args.save_dip)
    line = (f"wrote {args.out}{note}: t0={result.t0}, NFE={result.nfe}, seconds DIP "
            f"{result.seconds['dip']:.1f} + diffusion {result.seconds['diffusion']:.1f}")
    if result.adapt_iterations is not None:
        line += (f" (of which adapting the prior {result.seconds['adapt']:.1f}, "
                 f"{result.adapt_iterations} iterations)")
    if clean is not None:
        m = evaluate(result.image, clean)
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
        if result.dip_image is not None:
            line += f" (DIP alone {evaluate(result.dip_image, clean)['psnr']:.2f} dB)"
    print(line)
    return 0


def _run_tiled(args: argparse.Namespace, sampler: Any, observation: Any, op: Any, image: Any,
               clean: Any, note: str, tile: int | None, windows: list | None = None) -> int:
    from dipprior.io import save_image
    from dipprior.metrics import evaluate

    began = time.perf_counter()
    restored = _restore_parts(args, sampler, observation, op, args.seed, tile, windows,
                              progress=not args.no_progress)
    save_image(like_input(restored.clamp(0, 1), image, op), args.out,
               bits=output_bits(args.image, args.out))
    parts = (f"{len(windows)} window{'s' if len(windows) != 1 else ''} around the holes"
             if windows is not None else f"tiles of {tile}")
    line = f"wrote {args.out}{note}: {parts}, seconds {time.perf_counter() - began:.1f}"
    if clean is not None:
        m = evaluate(restored, clean)
        line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
    print(line)
    return 0


def _restore_parts(args: argparse.Namespace, sampler: Any, observation: Any, op: Any,
                   seed: int, tile: int | None, windows: list | None, progress: bool) -> Any:
    """The image restored in ``windows`` around its holes, or else in tiles of ``tile``."""
    from dipprior.pipeline.tiles import restore_tiled
    from dipprior.pipeline.windows import restore_windows

    with large_photo_speed(sampler.model):
        if windows is not None:
            return restore_windows(sampler, observation, op, seed, context=args.context,
                                   windows=windows, progress=progress)
        return restore_tiled(sampler, observation, op, seed, tile=tile, overlap=args.overlap,
                             progress=progress)


# ----------------------------------------------------------------------------- a folder

def _run_folder(args: argparse.Namespace) -> int:
    from dipprior.cli import restore_ranks

    ranks = restore_ranks.join()  # under torchrun: this rank's share of the images
    try:
        code = _restore_folder(args, ranks)
    except BaseException:
        restore_ranks.leave(ranks, done=False)
        raise
    restore_ranks.leave(ranks)
    return code


def _restore_folder(args: argparse.Namespace, ranks: Any) -> int:
    from tqdm.auto import tqdm

    from dipprior._distributed import gather, shard
    from dipprior.cli import restore_ranks
    from dipprior.io import load_image, save_image
    from dipprior.metrics import evaluate
    from dipprior.pipeline.checks import check_observation
    from dipprior.pipeline.result import SampleResult

    # everything is checked before the first image is restored (on every rank alike)
    folder = Path(args.image)
    paths = folder_images(folder)
    out = check_out_folder(args.out, folder)
    check_time_limit(args)
    if args.save_dip:
        raise ValueError("--save-dip: only for a single IMAGE; for a folder the DIP images are "
                         "written to --out as <name>_dip.png")
    task = task_from(args)
    settings = sampler_settings(args)
    names = output_names(paths, dip=settings_use_dip(None, settings))
    metrics = out / METRICS
    left_parts = restore_ranks.parts(out)  # rows an interrupted torchrun run kept
    rows = restore_ranks.merged(read_metrics(metrics) if args.simulate else {},
                                [read_metrics(p) for p in left_parts] if args.simulate else [])
    seeds = {path: args.seed + i for i, path in enumerate(paths)}
    mine = shard(paths, ranks.rank, ranks.world)  # the split depends on the folder alone
    todo = [p for p in mine if not (out / names[p][0]).exists()]
    args.device = restore_ranks.rank_device(args.device, ranks)
    prepared = {}  # path -> (clean or None, operator, observation), checked before any work
    sampler = None
    error: Exception | None = None
    try:
        for path in todo:
            try:
                image = load_image(path)
                check_size(image, "IMAGE")
                if args.simulate:
                    (op, observation), note = degrade_like(image, task, seeds[path]), ""
                else:
                    (op, note), observation = real_operator(task, image, seeds[path]), image
                check_observation(observation, op)
                tile = tile_size(args, image, op)
                windows = inpaint_windows(args, observation, op, tile)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"IMAGE: {path.name}: {exc}") from None
            prepared[path] = (image if args.simulate else None, op, observation, note, image,
                              (tile, windows))
        sampler = make_sampler(args, settings, *load_prior(args)) if todo else None
        for path in todo:  # expected seconds and memory of each image, before any work
            _, op, observation, _, image, (tile, windows) = prepared[path]
            try:
                plan = plan_cost(args, observation, op, sampler, tile, windows)
            except ValueError as exc:
                raise ValueError(f"IMAGE: {path.name}: {exc}") from None
            if tile or windows is not None:
                print(f"{path.name}: {plan}")
    except (ValueError, TypeError, OSError) as exc:  # every rank must reach agree()
        error = exc
    restore_ranks.agree(error, ranks)  # every rank refuses, or none (no rank has written yet)
    out.mkdir(parents=True, exist_ok=True)

    order = [p.name for p in paths]
    prefix = f"[rank {ranks.rank}] " if ranks.enabled else ""
    mine_rows: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{prefix}images",
               unit="image", disable=args.no_progress or not todo or ranks.rank > 0)
    for path in todo:
        output, dip_output = names[path]
        clean, op, observation, note, image, (tile, windows) = prepared.pop(path)
        if tile or windows is not None:  # a large photo in tiles, or windows around holes
            began = time.perf_counter()
            restored = _restore_parts(args, sampler, observation, op, seeds[path], tile,
                                      windows, progress=False)
            result = SampleResult(restored, nfe="",  # per tile or window: not one number
                                  seconds={"total": time.perf_counter() - began})
        else:
            result = keep_known(sampler(observation, op, seed=seeds[path]), observation, op)
        if dip_output and result.dip_image is not None:
            save_image(result.dip_image.clamp(0, 1), out / dip_output)
        line = (f"{prefix}wrote {out / output}{note}: t0={result.t0}, NFE={result.nfe}, seconds "
                f"{result.seconds['total']:.1f}")
        if clean is not None:
            m = evaluate(result.image, clean)
            dip_psnr = (evaluate(result.dip_image, clean)["psnr"]
                        if result.dip_image is not None else "")
            mine_rows[path.name] = {"Image": path.name, "PSNR": m["psnr"], "SSIM": m["ssim"],
                                    "MSE": m["mse"], "MAE": m["mae"], "Delta E": m["delta_e"],
                                    "DIP PSNR": dip_psnr, "t0": result.t0, "NFE": result.nfe,
                                    "Seconds": result.seconds["total"]}
            # the row before the image: an image that exists always has its row (several
            # ranks: in this rank's part, merged into metrics.csv at the end)
            if ranks.enabled:
                write_metrics(restore_ranks.part_path(out, ranks.rank), mine_rows, order)
            else:
                write_metrics(metrics, {**rows, **mine_rows}, order)
            line += f"; PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
        save_image(like_input(result.image, image, op), out / output,
                   bits=output_bits(path, out / output))
        tqdm.write(line)
        bar.update()
    bar.close()

    # every rank done: rank 0 writes the one metrics file and removes the parts
    restored = restore_ranks.finish(ranks, len(todo))
    all_rows = restore_ranks.merged(rows, gather([mine_rows]) if ranks.enabled else [mine_rows])
    if ranks.rank > 0:
        return 0
    if args.simulate and (left_parts or (ranks.enabled and restored)):
        write_metrics(metrics, all_rows, order)
    for part in restore_ranks.parts(out):
        part.unlink()
    summary = (f"restored {restored} of {len(paths)} images into {out}"
               + (f" ({len(paths) - restored} skipped: output exists)"
                  if restored < len(paths) else "")
               + (f" on {ranks.world} ranks" if ranks.enabled else ""))
    if args.simulate:
        psnrs = [v for v in (number(all_rows[n]["PSNR"]) for n in order if n in all_rows)
                 if v is not None]
        if psnrs:
            summary += (f"; {metrics}: average PSNR {sum(psnrs) / len(psnrs):.2f} dB over "
                        f"{len(psnrs)} images")
    print(summary)
    return 0
