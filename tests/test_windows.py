"""Noise-free inpainting restores only windows around the holes (issue 31, item 1)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter

from dipprior.diffusion import Scheduler
from dipprior.io import load_image, sample_image, save_image
from dipprior.operators import Denoise, Inpaint
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.tiles import restore_tiled
from dipprior.pipeline.windows import (
    Window,
    hole_windows,
    missing_pixels,
    restore_windows,
    window_seed,
)


def _inside(window, y, x, context, shape):
    """Whether pixel (y, x) has ``context`` pixels of ``window`` on every side (the image's
    border counts as enough)."""
    h, w = shape
    return ((y - window.y0 >= context or window.y0 == 0)
            and (window.y0 + window.h - 1 - y >= context or window.y0 + window.h == h)
            and (x - window.x0 >= context or window.x0 == 0)
            and (window.x0 + window.w - 1 - x >= context or window.x0 + window.w == w))


def test_windows_follow_the_holes():
    m = np.zeros((200, 300), bool)
    assert hole_windows(m) == []
    m[100, 150] = True
    assert hole_windows(m, context=8) == [Window(92, 142, 17, 17)]
    m[0:3, 0:2] = True  # at the corner: clipped to the image
    assert hole_windows(m, context=8) == [Window(0, 0, 11, 10), Window(92, 142, 17, 17)]
    m[100, 160] = True  # within 2 * context of the first: one window for both
    assert Window(92, 142, 17, 27) in hole_windows(m, context=8)


@pytest.mark.parametrize("seed", range(3))
def test_every_missing_pixel_is_deep_inside_a_window_no_side_too_long(seed):
    rng = np.random.default_rng(seed)
    shape = (150, 230)
    m = np.zeros(shape, bool)
    m[40:70, 60:150] = True  # an object
    for _ in range(6):  # thin diagonal scratches
        y, x = rng.integers(0, 150), rng.integers(0, 230)
        for t in range(int(rng.integers(10, 120))):
            m[min(y + t, 149), min(x + t, 229)] = True
    m |= rng.random(shape) < 0.002  # and some single pixels
    windows = hole_windows(m, context=6, max_side=48)
    assert all(max(w.h, w.w) <= 48 for w in windows)
    for y, x in zip(*np.nonzero(m), strict=True):
        assert any(_inside(w, y, x, 6, shape) for w in windows), (y, x)
    near = maximum_filter(m.view(np.uint8), size=13).sum()  # pixels within 6 of a hole
    assert sum(w.pixels for w in windows) < 2 * near < m.size


def test_a_thin_diagonal_hole_is_covered_by_small_windows():
    m = np.eye(200, dtype=bool)
    windows = hole_windows(m, context=8, max_side=512)
    assert len(windows) > 1 and sum(w.pixels for w in windows) < 0.5 * 216 * 216


def test_window_arguments_are_checked():
    m = np.zeros((20, 20), bool)
    with pytest.raises(ValueError, match="context"):
        hole_windows(m, context=-1)
    with pytest.raises(ValueError, match="max_side"):
        hole_windows(m, context=32, max_side=64)
    with pytest.raises(ValueError, match="missing"):
        hole_windows(np.zeros(5, bool))
    with pytest.raises(ValueError, match="noise-free inpainting"):
        restore_windows(lambda *a, **k: a[0], torch.rand(3, 8, 8), Denoise(0.1))
    with pytest.raises(ValueError, match="noise-free inpainting"):
        restore_windows(lambda *a, **k: a[0], torch.rand(3, 8, 8), Inpaint(torch.ones(8, 8), 0.1))
    with pytest.raises(ValueError, match="no window"):
        m[3, 3] = True
        restore_windows(lambda *a, **k: a[0], torch.rand(3, 20, 20), Inpaint(~torch.from_numpy(m)),
                        windows=[Window(10, 10, 5, 5)])


def _observation(h=64, w=96, seed=0):
    clean = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    return torch.round(clean * 255) / 255  # 8-bit values


def test_only_windows_reach_the_model_and_known_pixels_are_exact():
    y = _observation()
    mask = torch.ones(64, 96)
    mask[10:14, 20:25] = 0
    mask[50:52, 80:90] = 0
    op = Inpaint(mask)
    calls = []

    def fill(crop, op_crop, seed):
        calls.append((tuple(crop.shape), seed))
        assert isinstance(op_crop, Inpaint) and op_crop.mask.shape[-2:] == crop.shape[-2:]
        return torch.full_like(crop, 0.5)

    out = restore_windows(fill, y * mask, op, 7, context=4, progress=False)
    windows = hole_windows(missing_pixels(op), context=4)
    assert [c[0] for c in calls] == [(3, w.h, w.w) for w in windows] and len(calls) == 2
    assert [c[1] for c in calls] == [window_seed(7, w) for w in windows]
    assert torch.equal(out[:, mask == 1], (y * mask)[:, mask == 1])  # exact, not close
    assert torch.equal(out[:, mask == 0], torch.full_like(out[:, mask == 0], 0.5))
    calls.clear()
    assert torch.equal(restore_windows(fill, y, Inpaint(torch.ones(64, 96)), progress=False), y)
    assert calls == []  # no missing pixel: no call


def test_overlapping_windows_blend_only_the_missing_pixels():
    y = _observation(40, 200)
    mask = torch.ones(40, 200)
    mask[18:21, 5:195] = 0  # a long scratch: several windows of at most 48
    op = Inpaint(mask)
    values = iter(torch.linspace(0.1, 0.9, 50).tolist())
    out = restore_windows(lambda c, o, seed: torch.full_like(c, next(values)), y, op,
                          context=6, max_side=48, progress=False)
    assert len(hole_windows(missing_pixels(op), 6, 48)) > 3
    assert torch.equal(out[:, mask == 1], y[:, mask == 1])
    hole = out[0, 19, 5:195]
    assert float(hole.min()) >= 0.1 and float(hole.max()) <= 0.9
    assert float((hole[1:] - hole[:-1]).abs().max()) < 0.2  # ramps, no hard step


def test_a_window_equals_its_crop_restored_alone(model):
    sampler = DIPInitializedSampler(model, Scheduler(), init="classical", steps=2, samples=1,
                                    progress=False)
    y = _observation(48, 72, seed=1)
    mask = torch.ones(48, 72)
    mask[6:10, 8:12] = 0
    mask[30:36, 50:60] = 0
    op = Inpaint(mask)
    out = restore_windows(sampler, y * mask, op, 3, context=8, progress=False)
    windows = hole_windows(missing_pixels(op), context=8)
    assert len(windows) == 2
    for w in windows:
        alone = sampler(w.crop(y * mask), Inpaint(w.crop(mask)), seed=window_seed(3, w)).image
        holes = w.crop(mask) == 0
        assert torch.equal(w.crop(out)[:, holes], alone[:, holes])
    assert torch.equal(out[:, mask == 1], (y * mask)[:, mask == 1])
    # a window that is the whole image: the plain call with the image's seed
    full = torch.zeros(48, 72)
    full[1::2] = 1
    plain = sampler(y * full, Inpaint(full), seed=3).image
    got = restore_windows(sampler, y * full, Inpaint(full), 3, context=8, progress=False)
    assert torch.equal(got[:, full == 0], plain[:, full == 0])


def test_tiles_without_a_missing_pixel_are_copied():
    y = _observation(70, 90)
    mask = torch.ones(70, 90)
    mask[5:8, 5:8] = 0  # in the first tile only
    calls = []

    def half(tile, op, seed):
        calls.append(seed)
        return torch.full_like(tile, 0.5)

    out = restore_tiled(half, y * mask, Inpaint(mask), 0, tile=32, overlap=4, progress=False)
    assert len(calls) == 1
    assert torch.equal(out[:, mask == 1], (y * mask)[:, mask == 1])
    assert torch.allclose(out[:, mask == 0], torch.tensor(0.5))


def test_restore_inpaints_windows_and_keeps_known_bytes(tmp_path, capsys, model,
                                                        monkeypatch):
    from PIL import Image

    from dipprior.cli import main, restore_setup
    from dipprior.diffusion import save

    prior = str(save(model, Scheduler(), tmp_path / "m"))
    photo = (sample_image("coffee", (64, 80)) * 255).round() / 255
    save_image(photo, tmp_path / "in.png")
    mask = np.full((64, 80), 255, np.uint8)
    mask[20:26, 30:37] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    calls = []
    monkeypatch.setattr(restore_setup, "_seconds_per_pixel", lambda model, side, parts=False: 1e-6)
    original = DIPInitializedSampler.__call__

    def counted(self, observation, operator, *args, **kwargs):
        calls.append(tuple(observation.shape))
        return original(self, observation, operator, *args, **kwargs)

    monkeypatch.setattr(DIPInitializedSampler, "__call__", counted)
    argv = ["restore", str(tmp_path / "in.png"), "--task", "inpaint", "--mask",
            str(tmp_path / "mask.png"), "--model", prior, "--init", "classical", "--steps", "2",
            "--context", "8", "--tile", "64", "--overlap", "8",
            "--no-progress", "--out", str(tmp_path / "out.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 window around the holes (23x22" in out and "expect about" in out
    assert calls[0] == (3, 22, 23)  # the window only
    before = np.asarray(Image.open(tmp_path / "in.png"))
    after = np.asarray(Image.open(tmp_path / "out.png"))
    known = mask == 255
    assert np.array_equal(before[known], after[known])  # identical bytes
    assert not np.array_equal(before[~known], after[~known])
    # the forecast counts only the window's pixels: about 1/10 of the image's
    monkeypatch.setattr(restore_setup, "_seconds_per_pixel", lambda model, side, parts=False: 1.0)
    assert main([*argv, "--time-limit", str(23 * 22 * 2 * 1.7 * 1.01)]) == 0
    assert main([*argv, "--time-limit", str(23 * 22 * 2 * 1.7 * 0.99)]) == 2
    assert "over --time-limit" in capsys.readouterr().err
    assert load_image(tmp_path / "out.png").shape == (3, 64, 80)


def test_a_16_bit_png_keeps_its_known_pixels_to_the_last_bit(tmp_path, model):
    from PIL import Image

    from dipprior import _png
    from dipprior.cli import main
    from dipprior.diffusion import save

    prior = str(save(model, Scheduler(), tmp_path / "m"))
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16)
    (tmp_path / "in.png").write_bytes(_png.encode_png(array))
    mask = np.full((40, 48), 255, np.uint8)
    mask[10:14, 20:24] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["restore", str(tmp_path / "in.png"), "--task", "inpaint", "--mask",
                 str(tmp_path / "mask.png"), "--model", prior, "--init", "classical",
                 "--steps", "1", "--context", "4", "--no-progress",
                 "--out", str(tmp_path / "out.png")]) == 0
    out = _png.decode_png((tmp_path / "out.png").read_bytes())
    assert out.dtype == np.uint16  # 16-bit in, 16-bit out
    assert np.array_equal(out[mask == 255], array[mask == 255])
