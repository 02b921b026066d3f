"""A small PNG codec for 8- and 16-bit grey/grey-alpha/RGB/RGBA images.

Pillow (and therefore imageio and scikit-image) reads 16-bit RGB(A) PNGs as 8-bit and cannot write
them at all, so ``dipprior.io`` uses this module for 16-bit PNGs. It follows the PNG specification
(ISO/IEC 15948): all five filter types, Adam7 interlacing, chunk CRCs checked. Palette images and
bit depths below 8 are left to imageio. Inflating and un-filtering run in C (zlib, and Pillow's
PNG filter decoder one byte lane at a time); numpy does the rest.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> number of channels (0 grey, 2 RGB, 4 grey+alpha, 6 RGBA)
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
_COLOUR_TYPE = {c: t for t, c in _CHANNELS.items()}
# number of channels -> the 8-bit Pillow mode whose pixels have that many bytes
_PILLOW_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# Largest image decoded: 2**28 pixels (16384 x 16384), 2 GiB as 16-bit RGBA. A header may claim
# up to 2**31 - 1 on each side; checked before anything is allocated for it.
MAX_PIXELS = 2**28
# Adam7 passes: (row start, column start, row step, column step)
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
          (1, 0, 2, 1))


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode a uint8/uint16 array of shape (H, W) or (H, W, C), C in 1..4, as a PNG file."""
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"array: expected uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _COLOUR_TYPE:
        raise ValueError(f"array: expected shape (H, W) or (H, W, 1..4), got {array.shape}")
    height, width, channels = array.shape
    depth = 8 * array.dtype.itemsize
    rows = np.ascontiguousarray(array, dtype=f">u{array.dtype.itemsize}").view(np.uint8)
    rows = rows.reshape(height, width * channels * array.dtype.itemsize)
    # Filter "Up" on every row: byte minus the byte above (mod 256); cheap and compresses photos.
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPE[channels], 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, compress_level)) + _chunk(b"IEND", b""))


def read_header(data: bytes) -> dict | None:
    """The IHDR fields of a PNG file as a dict, or None when ``data`` is not a PNG."""
    if not data.startswith(SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return {"width": width, "height": height, "bit_depth": depth, "colour_type": colour,
            "compression": comp, "filter": filt, "interlace": interlace}


def check_size(width: int, height: int) -> None:
    """Raise ValueError unless a PNG header's ``width`` x ``height`` is a sane image size."""
    if width < 1 or height < 1:
        raise ValueError(f"data: the PNG header declares an empty {width}x{height} image "
                         "(width and height must be >= 1)")
    if width * height > MAX_PIXELS:
        raise ValueError(f"data: the PNG header declares {width}x{height} = {width * height} "
                         f"pixels, more than the {MAX_PIXELS} (2**28) this reader accepts")


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8- or 16-bit non-palette PNG to a uint8/uint16 array (H, W, C), C in 1..4."""
    header = read_header(data)
    if header is None:
        raise ValueError("data: not a PNG file")
    depth, colour = header["bit_depth"], header["colour_type"]
    if depth not in (8, 16) or colour not in _CHANNELS:
        raise ValueError(f"data: unsupported PNG (bit depth {depth}, colour type {colour})")
    if header["compression"] != 0 or header["filter"] != 0 or header["interlace"] not in (0, 1):
        raise ValueError("data: invalid PNG header")
    height, width, channels = header["height"], header["width"], _CHANNELS[colour]
    check_size(width, height)
    bpp = channels * depth // 8
    passes = _ADAM7 if header["interlace"] else ((0, 0, 1, 1),)
    sizes = [(r0, c0, dr, dc, -(-(height - r0) // dr), -(-(width - c0) // dc))
             for r0, c0, dr, dc in passes]
    expected = sum(h * (w * bpp + 1) for *_, h, w in sizes if h > 0 and w > 0)
    compressed = _idat(data)
    try:  # never inflate more than the header's image needs (a zlib bomb stops here)
        raw = np.frombuffer(zlib.decompressobj().decompress(compressed, expected), np.uint8)
    except zlib.error as exc:
        raise ValueError(f"data: corrupt PNG image data ({exc})") from None
    out = np.zeros((height, width, bpp), np.uint8)
    pos = 0
    for r0, c0, dr, dc, h, w in sizes:
        if h <= 0 or w <= 0:
            continue  # an empty pass has no filter bytes at all
        size = h * (w * bpp + 1)
        if pos + size > raw.size:
            raise ValueError("data: truncated PNG image data")
        out[r0::dr, c0::dc] = _unfilter(raw[pos:pos + size], h, w, channels, depth // 8)
        pos += size
    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    return out.view(dtype).reshape(height, width, channels).astype(dtype.newbyteorder("="))


def _idat(data: bytes) -> bytes:
    parts, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"data: corrupt PNG chunk {kind!r}")
        if kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            return b"".join(parts)
        elif kind[0:1].isupper() and kind not in (b"IHDR", b"PLTE"):
            raise ValueError(f"data: unknown critical PNG chunk {kind!r}")
        pos += 12 + length
    raise ValueError("data: truncated PNG file (no IEND chunk)")


def _unfilter(raw: np.ndarray, height: int, width: int, channels: int,
              itemsize: int) -> np.ndarray:
    """Undo the per-row PNG filters of one (sub-)image -> (height, width, channels * itemsize).

    The filters run in C, in Pillow's PNG ("zip") decoder.  Pillow keeps only the high byte of
    16-bit colour, so each byte lane goes through it as its own 8-bit image with the same filter
    bytes: a filter predicts byte ``i`` from bytes ``i - bpp`` (left), ``i`` and ``i - bpp`` (row
    above), that is from the same lane of the neighbouring pixels, so the high bytes of a 16-bit
    image are exactly an 8-bit image with ``channels`` channels filtered the same way (and the
    low bytes another).
    """
    lines = raw.reshape(height, 1 + width * channels * itemsize)
    kinds = lines[:, :1]
    if int(kinds.max()) > 4:
        raise ValueError(f"data: invalid PNG filter type {int(kinds.max())}")
    lanes = lines[:, 1:].reshape(height, width * channels, itemsize)
    out = np.empty((height, width * channels, itemsize), np.uint8)
    mode = _PILLOW_MODE[channels]
    for lane in range(itemsize):
        stream = np.concatenate([kinds, lanes[:, :, lane]], axis=1).tobytes()
        image = Image.frombytes(mode, (width, height), zlib.compress(stream, 0), "zip", mode)
        out[:, :, lane] = np.asarray(image).reshape(height, width * channels)
    return out.reshape(height, width, channels * itemsize)
