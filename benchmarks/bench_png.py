"""Seconds to load a 12 MP 16-bit RGB PNG: today's decoder against the former pure-Python filter
loop, in the same run.

Makes a 4000x3000 16-bit photo (a bundled scikit-image photo up-sampled, plus fine texture),
writes it with per-row adaptive filters chosen as libpng does (the smallest sum of absolute
filtered bytes, so photos get mostly Paeth and Average rows, the sequential ones), then times
``dipprior.io.load_image`` on it with the current un-filtering and with the former Python loop
(kept below as the reference), checks both give the same pixels, and prints the ratio.

    python benchmarks/bench_png.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from dipprior import _png
from dipprior.io import load_image, sample_image


def photo16(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint16: an up-sampled photo with fine texture."""
    base = sample_image("coffee")[None].double()
    big = F.interpolate(base, size=(height, width), mode="bicubic", align_corners=False)[0]
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(3, height, width, generator=g, dtype=torch.float64)
    image = (0.97 * big + 0.03 * texture).clamp(0, 1)
    return np.round(image.permute(1, 2, 0).numpy() * 65535).astype(np.uint16)


def _filtered(rows: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    """All five PNG filters of a block of rows: (5, n, row_bytes) uint8."""
    x, b = rows.astype(np.int16), up.astype(np.int16)
    a = np.pad(x, ((0, 0), (bpp, 0)))[:, :-bpp]
    c = np.pad(b, ((0, 0), (bpp, 0)))[:, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    preds = (np.zeros_like(x), a, b, (a + b) >> 1, paeth)
    return np.stack([(x - pred).astype(np.uint8) for pred in preds])


def encode_adaptive(array: np.ndarray) -> bytes:
    """A non-interlaced PNG of a uint16 (H, W, 3) array, filter per row chosen as libpng does."""
    h, w, ch = array.shape
    bpp = 2 * ch
    rows = np.ascontiguousarray(array.astype(">u2")).view(np.uint8).reshape(h, w * bpp)
    lines = np.empty((h, 1 + w * bpp), np.uint8)
    for y0 in range(0, h, 128):
        block = rows[y0:y0 + 128]
        up = np.concatenate([rows[y0 - 1:y0] if y0 else np.zeros_like(rows[:1]), block[:-1]])
        options = _filtered(block, up, bpp)
        cost = np.abs(options.view(np.int8).astype(np.int32)).sum(axis=2)  # (5, n)
        kinds = cost.argmin(axis=0)
        lines[y0:y0 + 128, 0] = kinds
        lines[y0:y0 + 128, 1:] = options[kinds, np.arange(len(kinds))]
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (_png.SIGNATURE + _png._chunk(b"IHDR", header)
            + _png._chunk(b"IDAT", zlib.compress(lines.tobytes(), 6)) + _png._chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- the former loop

def _reference_unfilter(raw: np.ndarray, height: int, width: int, channels: int,
                        itemsize: int) -> np.ndarray:
    """The decoder's filter loop before it moved to C: one row at a time, Average and Paeth in
    plain Python (sequential along the row)."""
    bpp = channels * itemsize
    row_bytes = width * bpp
    lines = raw.reshape(height, row_bytes + 1)
    out = np.empty((height, row_bytes), np.uint8)
    prior = np.zeros(row_bytes, np.uint8)
    for y in range(height):
        kind, line = lines[y, 0], lines[y, 1:]
        if kind == 0:
            out[y] = line
        elif kind == 1:
            out[y] = np.add.accumulate(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:
            out[y] = line + prior
        elif kind == 3:
            out[y] = _average(line.tolist(), prior.tolist(), bpp)
        else:
            out[y] = _paeth(line.tolist(), prior.tolist(), bpp)
        prior = out[y]
    return out.reshape(height, width, bpp)


def _average(line: list[int], prior: list[int], bpp: int) -> list[int]:
    cur = line[:]
    for i in range(len(cur)):
        left = cur[i - bpp] if i >= bpp else 0
        cur[i] = (cur[i] + ((left + prior[i]) >> 1)) & 0xFF
    return cur


def _paeth(line: list[int], prior: list[int], bpp: int) -> list[int]:
    cur = line[:]
    for i in range(len(cur)):
        a, c = (cur[i - bpp], prior[i - bpp]) if i >= bpp else (0, 0)
        b = prior[i]
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 0xFF
    return cur


def _time_load(path: Path, repeats: int) -> tuple[float, torch.Tensor]:
    seconds, image = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        image = load_image(path)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-repeats", type=int, default=1,
                   help="timings of the former Python loop (slow: about 8 s at 12 MP)")
    args = p.parse_args()
    array = photo16(args.width, args.height)
    data = encode_adaptive(array)
    kinds = np.bincount(np.frombuffer(zlib.decompress(_png._idat(data)), np.uint8).reshape(
        args.height, -1)[:, 0], minlength=5)
    print(f"{args.width}x{args.height} 16-bit RGB PNG, {len(data) / 2**20:.1f} MiB; rows per "
          f"filter (none, sub, up, average, paeth): {kinds.tolist()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo16.png"
        path.write_bytes(data)
        now, image = _time_load(path, args.repeats)
        with mock.patch.object(_png, "_unfilter", _reference_unfilter):
            before, reference = _time_load(path, args.reference_repeats)
    assert torch.equal(image, reference), "the two decoders disagree"
    assert np.array_equal(_png.decode_png(data), array)
    print(f"load_image, median: {now:.2f} s now, {before:.2f} s with the former Python loop "
          f"({before / now:.1f}x faster); target <= 3 s")


if __name__ == "__main__":
    main()
