"""Image I/O: round trips, independent decoders (Pillow, hand-built PNGs), errors, atomic writes."""

import io
import os
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage import io as skio

from dipprior import _atomic, _png
from dipprior.io import (
    SAMPLE_IMAGES,
    center_crop,
    load_image,
    sample_image,
    save_image,
    to_numpy,
    to_tensor,
)


def _rand_image(h=17, w=23, seed=0, levels=None):
    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    return x if levels is None else torch.round(x * levels) / levels


def _pil_bytes(array, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", **kwargs)
    return buf.getvalue()


# ----------------------------------------------------------------------------- hand-built PNGs

_ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
          (1, 0, 2, 1)]


def _filter(rows, bpp, kinds):
    """Apply PNG filters (forward direction, written independently of the decoder)."""
    rows = rows.astype(np.int64)
    out = []
    for y, kind in enumerate(kinds):
        x = rows[y]
        up = rows[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(x)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        out.append(bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _build_png(array, interlace=False, seed=0):
    """A PNG of a uint8/uint16 (H, W, C) array with random per-row filters of all five types."""
    rng = np.random.default_rng(seed)
    h, w, c = array.shape
    depth = 8 * array.dtype.itemsize
    bpp = c * array.dtype.itemsize
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    big = array.astype(array.dtype.newbyteorder(">"))
    passes = _ADAM7 if interlace else [(0, 0, 1, 1)]
    raw = b""
    for r0, c0, dr, dc in passes:
        sub = np.ascontiguousarray(big[r0::dr, c0::dc])
        if sub.size == 0:
            continue
        rows = sub.reshape(sub.shape[0], -1).view(np.uint8).reshape(sub.shape[0], -1)
        raw += _filter(rows, bpp, rng.integers(0, 5, sub.shape[0]))
    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"tEXt", b"k\0v")
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_png_decoder_all_filters(dtype, channels, interlace):
    rng = np.random.default_rng(channels)
    # smooth ramp + noise, so that every filter sees carries and wrap-arounds
    h, w = 13, 10
    ramp = np.linspace(0, np.iinfo(dtype).max, h * w * channels).reshape(h, w, channels)
    array = (ramp + rng.integers(0, 300, ramp.shape)).clip(0, np.iinfo(dtype).max).astype(dtype)
    decoded = _png.decode_png(_build_png(array, interlace=interlace, seed=channels))
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1, 3), (3, 2, 3)])
def test_png_decoder_tiny_interlaced(shape):
    """Images smaller than the Adam7 grid have empty passes (no bytes at all)."""
    array = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape) * 1000
    np.testing.assert_array_equal(_png.decode_png(_build_png(array, interlace=True)), array)


def test_png_decoder_matches_pillow_on_adaptive_filters():
    photo = skdata.astronaut()[:64, :64]
    data = _pil_bytes(photo)
    raw = np.frombuffer(zlib.decompress(_png._idat(data)), np.uint8).reshape(64, -1)
    assert len(set(raw[:, 0].tolist())) >= 2  # Pillow mixed several filter types
    np.testing.assert_array_equal(_png.decode_png(data), photo)


def test_png_encoder_read_by_pillow():
    grey = (np.random.default_rng(0).random((7, 9)) * 65535).astype(np.uint16)
    with Image.open(io.BytesIO(_png.encode_png(grey))) as im:
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), grey)
    rgb = (np.random.default_rng(1).random((7, 9, 3)) * 65535).astype(np.uint16)
    with Image.open(io.BytesIO(_png.encode_png(rgb))) as im:
        # Pillow decodes 16-bit RGB to 8 bits by keeping the high byte
        np.testing.assert_array_equal(np.asarray(im), (rgb >> 8).astype(np.uint8))


def test_png_decoder_rejects_corruption():
    data = bytearray(_png.encode_png(np.zeros((4, 4, 3), np.uint16)))
    data[40] ^= 0xFF  # inside the IDAT body -> CRC mismatch
    with pytest.raises(ValueError, match="corrupt"):
        _png.decode_png(bytes(data))
    with pytest.raises(ValueError, match="truncated"):
        _png.decode_png(_png.encode_png(np.zeros((4, 4), np.uint8))[:-12])


def test_png_decoder_rejects_an_unknown_filter_type():
    header = struct.pack(">IIBBBBB", 2, 3, 16, 2, 0, 0, 0)
    raw = b"".join(bytes([kind]) + bytes(12) for kind in (0, 5, 0))
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="invalid PNG filter type 5"):
        _png.decode_png(data)


# ----------------------------------------------------------------------------- load / save


def test_png8_round_trip_exact(tmp_path):
    img = _rand_image(levels=255)
    path = save_image(img, tmp_path / "a.png")
    assert torch.equal(load_image(path), img)
    # an independent reader sees the same 8-bit values
    np.testing.assert_array_equal(
        skio.imread(path), np.round(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    )


def test_png16_round_trip(tmp_path):
    img = _rand_image(seed=1)
    path = save_image(img, tmp_path / "a16.PNG", bits=16)
    assert _png.read_header(path.read_bytes())["bit_depth"] == 16
    loaded = load_image(path)
    assert loaded.dtype == torch.float32 and loaded.shape == img.shape
    assert (loaded - img).abs().max().item() <= 0.5 / 65535 + 1e-7
    # values on the 16-bit grid come back exactly
    exact = _rand_image(seed=2, levels=65535)
    assert torch.allclose(load_image(save_image(exact, tmp_path / "b.png", bits=16)), exact,
                          rtol=0, atol=1e-7)


def test_png16_written_by_pillow(tmp_path):
    grey = (np.random.default_rng(3).random((6, 5)) * 65535).astype(np.uint16)
    (tmp_path / "g16.png").write_bytes(_pil_bytes(grey))
    loaded = load_image(tmp_path / "g16.png")
    assert loaded.shape == (3, 6, 5)
    expected = torch.from_numpy(grey.astype(np.float32) / 65535)
    for c in range(3):
        assert torch.equal(loaded[c], expected)


def test_jpeg_round_trip_approximate(tmp_path):
    img = sample_image("coffee", size=64)
    for name in ("a.jpg", "a.JPEG"):
        loaded = load_image(save_image(img, tmp_path / name))
        assert loaded.shape == img.shape
        assert (loaded - img).abs().mean().item() < 0.02
    low = load_image(save_image(img, tmp_path / "low.jpg", quality=10))
    assert (low - img).abs().mean() > (load_image(tmp_path / "a.jpg") - img).abs().mean()


def test_grey_png_becomes_rgb(tmp_path):
    grey = (np.random.default_rng(4).random((8, 6)) * 255).astype(np.uint8)
    (tmp_path / "g.png").write_bytes(_pil_bytes(grey))
    loaded = load_image(tmp_path / "g.png")
    assert loaded.shape == (3, 8, 6)
    assert torch.equal(loaded[0], torch.from_numpy(grey / np.float32(255)))
    assert torch.equal(loaded[0], loaded[1]) and torch.equal(loaded[0], loaded[2])


def test_rgba_drops_alpha_with_warning(tmp_path):
    rgba = (np.random.default_rng(5).random((8, 6, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    (tmp_path / "opaque.png").write_bytes(_pil_bytes(rgba))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opaque = load_image(tmp_path / "opaque.png")  # nothing lost: no warning
    assert torch.equal(opaque, to_tensor(rgba[..., :3]))
    rgba[0, :, 3] = 0
    (tmp_path / "holes.png").write_bytes(_pil_bytes(rgba))
    with pytest.warns(UserWarning, match=r"alpha channel dropped \(12.5% .*not composited"):
        loaded = load_image(tmp_path / "holes.png")
    assert torch.equal(loaded, to_tensor(rgba[..., :3]))  # colour values kept as stored
    la = np.stack([rgba[..., 0], rgba[..., 3]], -1).astype(np.uint16) * 257
    (tmp_path / "la16.png").write_bytes(_png.encode_png(la))
    with pytest.warns(UserWarning, match="alpha"):
        grey = load_image(tmp_path / "la16.png")
    assert torch.equal(grey[2], torch.from_numpy(rgba[..., 0] / np.float32(255)))


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(tmp_path / "cmyk.jpg")
    assert (loaded - to_tensor(rgb)).abs().max() < 3 / 255


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="path.*notes.png"):
        load_image(tmp_path / "notes.png")
    data = bytearray(save_image(_rand_image(), tmp_path / "c.png", bits=16).read_bytes())
    data[45] ^= 0xFF
    (tmp_path / "c.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="path.*corrupt"):
        load_image(tmp_path / "c.png")


def test_save_clamps_rounding_overshoot_and_keeps_permissions(tmp_path):
    img = torch.full((3, 4, 4), 0.5)
    img[0] = 1.0005
    img[1] = -0.0005
    loaded = load_image(save_image(img, tmp_path / "c.png"))
    assert torch.equal(loaded[0], torch.ones(4, 4)) and torch.equal(loaded[1], torch.zeros(4, 4))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_errors(tmp_path):
    img = _rand_image()
    with pytest.raises(ValueError, match="path.*extension"):
        save_image(img, tmp_path / "a.bmp")
    with pytest.raises(ValueError, match="bits"):
        save_image(img, tmp_path / "a.jpg", bits=16)
    with pytest.raises(ValueError, match="bits"):
        save_image(img, tmp_path / "a.png", bits=12)
    with pytest.raises(ValueError, match="quality"):
        save_image(img, tmp_path / "a.jpg", quality=0)
    with pytest.raises(ValueError, match="tensor.*shape"):
        save_image(img[None], tmp_path / "a.png")
    with pytest.raises(ValueError, match="tensor.*shape"):
        save_image(img[:2], tmp_path / "a.png")
    with pytest.raises(TypeError, match="tensor.*floating"):
        save_image((img * 255).to(torch.uint8), tmp_path / "a.png")
    with pytest.raises(TypeError, match="tensor"):
        save_image([[0.5]], tmp_path / "a.png")
    bad = img.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="tensor.*NaN"):
        save_image(bad, tmp_path / "a.png")
    with pytest.raises(ValueError, match="path.*directory"):
        save_image(img, tmp_path / "nope" / "a.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("values", [(0.0, 255.0), (-0.2, 0.5), (0.2, 1.7)])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_save_refuses_floats_outside_0_1(tmp_path, values, kind):
    """0..255 floats were clamped to a white image without a word."""
    img = torch.full((3, 4, 4), values[0])
    img[0, 0, 0] = values[1]
    img = img.numpy() if kind == "numpy" else img
    with pytest.raises(ValueError, match=r"tensor: float values must lie in \[0, 1\].*255"):
        save_image(img, tmp_path / "a.png")
    with pytest.raises(ValueError, match="tensor"):
        save_image(img, tmp_path / "a.png", bits=16)
    assert list(tmp_path.iterdir()) == []


def _header_only_png(width, height, depth=16, colour=2):
    """A valid PNG whose IHDR declares ``width`` x ``height`` but whose IDAT holds one byte."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("size, message", [
    ((0, 0), "an empty 0x0"), ((7, 0), "an empty 7x0"), ((0, 3), "an empty 0x3"),
    ((100_000, 100_000), "100000x100000 .*2\\*\\*28"), ((2**31 - 1, 2), ".* pixels, more than"),
])
def test_png_header_size_checked_before_decoding(tmp_path, size, message):
    """0x0 loaded as an empty tensor; 100000x100000 tried to allocate ~56 GiB before failing."""
    data = _header_only_png(*size)
    with pytest.raises(ValueError, match=f"data: the PNG header declares {message}"):
        _png.decode_png(data)
    for depth in (8, 16):
        (tmp_path / "h.png").write_bytes(_header_only_png(*size, depth=depth))
        with pytest.raises(ValueError, match=f"path: cannot read .*h.png.*declares {message}"):
            load_image(tmp_path / "h.png")


def test_png_decoder_inflates_only_what_the_header_needs():
    """Surplus image data (or a zlib bomb) is not inflated past the declared image."""
    pixel = np.array([[[1, 2, 65535]]], np.uint16)
    raw = b"\0" + pixel.astype(">u2").tobytes() + b"\0" * 10_000_000
    header = struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
    assert len(data) < 20_000
    tracemalloc.start()
    try:
        decoded = _png.decode_png(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(decoded, pixel)
    assert peak < 1_000_000  # not the 10 MB the stream would inflate to


def test_atomic_save_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    old = save_image(_rand_image(seed=1, levels=255), target).read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_image(_rand_image(seed=2), target)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert target.read_bytes() == old


def test_save_accepts_numpy_chw(tmp_path):
    img = _rand_image(levels=255)
    assert torch.equal(load_image(save_image(img.numpy(), tmp_path / "n.png")), img)


# ----------------------------------------------------------------------------- conversions


def test_to_tensor_dtypes_and_layout():
    u8 = np.array([[[0, 128, 255]]], np.uint8)
    assert torch.equal(to_tensor(u8), torch.tensor([[[0.0]], [[128 / 255]], [[1.0]]]))
    u16 = np.array([[[0, 257, 65535]]], np.uint16)
    assert torch.allclose(to_tensor(u16).flatten(), torch.tensor([0.0, 1 / 255, 1.0]))
    assert torch.equal(to_tensor(np.ones((1, 1, 3), bool)).flatten(), torch.ones(3))
    batch = np.random.default_rng(0).random((2, 5, 4, 3))
    out = to_tensor(batch)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32
    assert torch.equal(out[1, 2], torch.from_numpy(batch[1, :, :, 2]).float())


def test_to_tensor_errors():
    with pytest.raises(ValueError, match="array.*shape"):
        to_tensor(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="array.*shape"):
        to_tensor(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="array.*\\[0, 1\\]"):
        to_tensor(np.full((2, 2, 3), 255.0))
    with pytest.raises(ValueError, match="array.*NaN"):
        to_tensor(np.full((2, 2, 3), np.nan))
    with pytest.raises(TypeError, match="array.*int32"):
        to_tensor(np.zeros((2, 2, 3), np.int32))
    with pytest.raises(TypeError, match="array"):
        to_tensor(torch.zeros(2, 2, 3))


def test_to_numpy_round_trip():
    img = _rand_image()
    array = to_numpy(img)
    assert array.shape == (17, 23, 3) and array.dtype == np.float32
    assert torch.equal(to_tensor(array), img)
    batch = to_numpy(torch.stack([img, img]).double())
    assert batch.shape == (2, 17, 23, 3) and batch.dtype == np.float64
    assert to_numpy(img.half()).dtype == np.float32
    with pytest.raises(ValueError, match="tensor.*shape"):
        to_numpy(torch.zeros(17, 23, 3))
    with pytest.raises(TypeError, match="tensor"):
        to_numpy([1, 2, 3])


def test_center_crop():
    x = torch.arange(5 * 8).reshape(1, 5, 8)
    assert torch.equal(center_crop(x, 2), x[:, 1:3, 3:5])
    assert torch.equal(center_crop(x, (3, 5)), x[:, 1:4, 1:6])
    assert center_crop(torch.zeros(2, 3, 9, 9), 4).shape == (2, 3, 4, 4)
    for bad in (0, -1, 1.5, (1, 2, 3), True, "4"):
        with pytest.raises(ValueError, match="size"):
            center_crop(x, bad)
    with pytest.raises(ValueError, match="size.*larger"):
        center_crop(x, (6, 2))
    with pytest.raises(TypeError, match="img"):
        center_crop(np.zeros((3, 4, 4)), 2)


# ----------------------------------------------------------------------------- sample images


def test_sample_images_all_load_offline():
    for name in SAMPLE_IMAGES:
        img = sample_image(name)
        assert img.ndim == 3 and img.shape[0] == 3 and img.dtype == torch.float32, name
        assert 0 <= img.min() and img.max() <= 1 and img.std() > 0.05, name
    assert {"astronaut", "chelsea", "coffee", "rocket"} <= set(SAMPLE_IMAGES)


def test_sample_image_crop_matches_skimage():
    photo = skdata.coffee()  # (400, 600, 3)
    img = sample_image("coffee", size=128)
    assert img.shape == (3, 128, 128) and img.is_contiguous()
    assert torch.equal(img, to_tensor(photo[136:264, 236:364]))
    assert sample_image("rocket", size=(32, 48)).shape == (3, 32, 48)
    img.fill_(0)  # the cache must not be affected
    assert sample_image("coffee", size=128).max() > 0


def test_sample_image_errors():
    with pytest.raises(ValueError, match="name.*'lena'.*astronaut"):
        sample_image("lena")
    with pytest.raises(ValueError, match="size"):
        sample_image("chelsea", size=1000)


def test_an_unreadable_image_names_itself(tmp_path, monkeypatch):
    """A mode-000 file (for a user who is not root) gave a raw PermissionError (#30)."""
    from pathlib import Path

    save_image(torch.rand(3, 8, 8), tmp_path / "locked.png")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(PermissionError, match=r"path: cannot read .*locked.png.* \(permission "
                                              r"denied\)"):
        load_image(tmp_path / "locked.png")
