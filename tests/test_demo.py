"""`dipprior demo`: the main job end to end on a tiny crop with a tiny budget."""

import csv
import sys

import pytest
import torch

from dipprior import dip
from dipprior.cli import main
from dipprior.demo import COLUMNS, DEMO_COLUMNS, DemoConfig, run_demo, save_figure
from dipprior.io import load_image, sample_image

TINY = {"images": ("chelsea",), "size": 32, "box": 8, "dip_iterations": 4, "dip_channels": 8,
        "ddpm_steps": 3, "steps": 2, "t0": 30}
HOLE_METHODS = ["Biharmonic", "DiffPIR (noise)", "DIP", "Classical->DDPM", "DIP->DDPM",
                "Classical x4 (default)"]
DENOISE_METHODS = ["DiffPIR (noise)", "DIP", "Classical->DDPM (default)", "DIP->DDPM"]


@pytest.mark.slow
def test_demo_end_to_end_with_the_shipped_prior(tmp_path, monkeypatch):
    fits = []
    original = dip.fit

    def counting_fit(*args, **kwargs):
        fits.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dip, "fit", counting_fit)
    monkeypatch.setitem(sys.modules, "bm3d", None)  # CBM3D absent: the table without it
    lines = []
    result = run_demo(DemoConfig(tasks=("inpaint", "box", "denoise"), **TINY),
                      out=tmp_path / "demo", progress=False, log=lines.append)
    assert len(fits) == 3  # DIP alone and DIP->DDPM share one fit per image and task

    table = result.table
    assert table.columns == DEMO_COLUMNS and DEMO_COLUMNS[1:] == COLUMNS
    assert COLUMNS[:7] == ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E"]
    assert list(result.tables) == ["inpaint", "box", "denoise"]
    for task, methods in (("inpaint", HOLE_METHODS), ("box", HOLE_METHODS),
                          ("denoise", DENOISE_METHODS)):
        per_image = [r for r in result.tables[task].rows if r["Image"] != "Average"]
        assert [r["Method"] for r in per_image] == methods
        assert list(result.images[task]["chelsea"]) == ["Ground truth", "Degraded", *methods]
    per_image = [r for r in result.tables["denoise"].rows if r["Image"] != "Average"]
    nfe = {r["Method"]: r["NFE"] for r in per_image}
    # denoising: the classical start is the observation (one step); DIP->DDPM's 2 steps plus
    # its reference chain from the observation (same settings, 2 steps)
    assert nfe == {"DiffPIR (noise)": 3, "DIP": 0, "Classical->DDPM (default)": 1,
                   "DIP->DDPM": 4}
    seconds = {r["Method"]: r["Seconds"] for r in per_image}
    assert seconds["DIP->DDPM"] >= seconds["DIP"] > 0  # includes the shared DIP fit
    clean = sample_image("chelsea", size=32)
    for task, panels in result.images.items():
        for r in (r for r in result.tables[task].rows if r["Image"] != "Average"):
            image = panels["chelsea"][r["Method"]]
            assert image.shape == clean.shape and 0 <= float(image.min()) <= 1
            assert float(image.max()) <= 1
            mse = float((image - clean).square().mean())
            assert r["MSE"] == pytest.approx(mse, rel=1e-4)  # scored against the clean crop
    box = result.images["box"]["chelsea"]["Degraded"]
    assert float((box == 0).all(dim=0).float().sum()) == 64  # the 8x8 hole

    out = tmp_path / "demo"
    assert result.figure == out / "demo.png" and result.csv == out / "results.csv"
    assert result.figures == [out / "demo.png", out / "demo_denoise.png"]
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(result.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == DEMO_COLUMNS
    assert len(rows) == 2 * (2 * len(HOLE_METHODS) + len(DENOISE_METHODS))  # + averages
    text = result.markdown.read_text()
    for method in HOLE_METHODS:
        assert f"## {method}" in text
    assert "# inpainting, a centred 8x8 hole" in text
    assert "| Image   |  PSNR |   SSIM |      MSE |      MAE | Delta E | NFE | Seconds |" in text
    assert any("Total:" in line for line in lines)
    assert result.cpu_seconds > 0 and result.wall_seconds > 0


def test_demo_is_deterministic_and_inpaints_with_a_given_model(tmp_path, make_unet,
                                                               monkeypatch):
    from dipprior import _mpl
    from dipprior.diffusion import Scheduler

    model = make_unet().eval()
    config = DemoConfig(tasks="inpaint", **TINY)
    a = run_demo(config, out=None, model=model, scheduler=Scheduler(), progress=False, log=None)
    monkeypatch.setattr(_mpl, "figure", lambda **kwargs: None)  # the figure without matplotlib
    b = run_demo(config, out=tmp_path / "d", model=model, scheduler=Scheduler(),
                 progress=False, log=None)
    assert a.figure is None and a.csv is None and a.image_files == []
    for method in HOLE_METHODS:
        torch.testing.assert_close(a.images["inpaint"]["chelsea"][method],
                                   b.images["inpaint"]["chelsea"][method])
    degraded = a.images["inpaint"]["chelsea"]["Degraded"]
    missing = (degraded == 0).all(dim=0).float().mean()
    assert 0.4 < float(missing) < 0.6  # half of the pixels are missing

    # every restored image on its own, the method name made file-name safe
    images = tmp_path / "d" / "images" / "inpaint"
    assert b.image_files == [images / f"chelsea_{m}.png" for m in (
        "Biharmonic", "DiffPIR-noise", "DIP", "Classical-DDPM", "DIP-DDPM",
        "Classical-x4-default")]
    assert sorted(p.name for p in images.iterdir()) == sorted(p.name for p in b.image_files)
    for path, method in zip(b.image_files, HOLE_METHODS, strict=True):
        torch.testing.assert_close(load_image(path), b.images["inpaint"]["chelsea"][method],
                                   atol=0.5 / 255 + 1e-6, rtol=0)
    figure = load_image(b.figure)  # labelled: larger than the bare 8 x 32 px tiles
    assert figure.shape[-1] > 8 * 32 and figure.shape[-2] > 32


def test_demo_deblurs(make_unet):
    from dipprior.diffusion import Scheduler

    config = DemoConfig(tasks="deblur", blur="motion:9", **TINY)
    r = run_demo(config, out=None, model=make_unet().eval(), scheduler=Scheduler(),
                 progress=False, log=None)
    assert list(r.tables) == ["deblur"]
    panels = r.images["deblur"]["chelsea"]
    assert ["Ground truth", "Degraded", "Wiener", "DiffPIR (noise)", "DIP", "Classical->DDPM",
            "DIP->DDPM", "Classical x4 (default)"] == list(panels)
    assert panels["Degraded"].shape == panels["Ground truth"].shape == (3, 32, 32)


@pytest.mark.parametrize("stand_in", [None, "mock", "patched"])
def test_figure_without_matplotlib_labels_every_column(tmp_path, monkeypatch, stand_in):
    # None: import matplotlib -> ImportError; "mock": what colour-science leaves in sys.modules
    # when matplotlib is not installed; "patched": dipprior._mpl.figure() returns None
    from unittest import mock

    from dipprior import _mpl
    from dipprior.experiments import plots

    if stand_in == "patched":
        monkeypatch.setattr(_mpl, "figure", lambda **kwargs: None)
    else:
        fake = mock.MagicMock() if stand_in else None
        monkeypatch.setitem(sys.modules, "matplotlib", fake)
        monkeypatch.setitem(sys.modules, "matplotlib.pyplot", fake)
    columns = ("Ground truth", "Degraded", "DIP->DDPM")
    generator = torch.Generator().manual_seed(0)
    panels = {name: {c: torch.rand(3, 8, 10, generator=generator) for c in columns}
              for name in ("a", "b")}
    psnr = {(n, c): 20.0 + i for i, (n, c) in enumerate(
        (n, c) for n in panels for c in columns[1:])}
    path = save_figure(panels, psnr, tmp_path / "grid.png", title="a title")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # atomic, no temp left
    grid = load_image(path)
    layout = plots._grid_layout(panels, psnr, "a title")
    assert grid.shape == (3, layout.size[1], layout.size[0])
    scale = layout.scale
    assert scale > 1  # 10-pixel crops are enlarged so that the labels fit

    def ink(region):  # dark (text) pixels
        return int((region.max(dim=0).values < 0.5).sum())

    for (name, column), (left, top) in layout.tiles.items():
        # the tile is the input, enlarged (nearest neighbour) by the integer factor
        tile = grid[:, top:top + 8 * scale, left:left + 10 * scale]
        expected = panels[name][column].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
        torch.testing.assert_close(tile, expected, atol=0.5 / 255 + 1e-6, rtol=0)
        # above it the label band: dark text on white, the PSNR in its lower half
        band_left, band_top, band_right, band_bottom = layout.labels[name, column]
        assert band_bottom <= top and band_left <= left and left + 10 * scale <= band_right
        band = grid[:, band_top:band_bottom, band_left:band_right]
        assert ink(band) > 10
        assert float((band.min(dim=0).values > 0.98).float().mean()) > 0.6  # background
        lower = band[:, band.shape[1] // 2:]
        assert (ink(lower) > 5) == (column != "Ground truth")
    for box in layout.names.values():  # the image name left of each row
        assert ink(grid[:, box[1]:box[3], box[0]:box[2]]) > 3
    title = layout.title
    assert title is not None and ink(grid[:, title[1]:title[3], title[0]:title[2]]) > 5


def test_demo_config_rejects_bad_input():
    with pytest.raises(ValueError, match="tasks"):
        DemoConfig(tasks=("blur",))
    with pytest.raises(ValueError, match="tasks"):
        DemoConfig(tasks=("box", "box"))
    with pytest.raises(ValueError, match="box"):
        DemoConfig(tasks=("box",), size=32, box=32)
    with pytest.raises(ValueError, match="images"):
        DemoConfig(images=("lena",))
    with pytest.raises(ValueError, match="dip_iterations"):
        DemoConfig(dip_iterations=0)
    with pytest.raises(ValueError, match="divisible"):
        DemoConfig(tasks=("sr",), size=30, factor=4)
    # noise levels in the user's 0..255 units, before any work (#30)
    with pytest.raises(ValueError, match=r"sigma: expected a noise std in 0..255 .*got -1$"):
        DemoConfig(sigma=-1)
    with pytest.raises(ValueError, match=r"blur_sigma: expected a noise std in 0..255"):
        DemoConfig(blur_sigma=300.0)
    with pytest.raises(ValueError, match=r"keep: expected a fraction in \(0, 1\], got 2"):
        DemoConfig(keep=2)
    from dipprior.operators import make_task

    with pytest.raises(ValueError, match=r"sigma: expected a noise std in 0..255 .*got -1$"):
        make_task("denoise", sigma=-1)  # was refused on the [0, 1] scale (-0.00392)


@pytest.mark.parametrize("argv, message", [
    # was refused in 0..1 units, after 16 s of work on the tasks before denoise
    (["--sigma", "-1"], "--sigma: expected a noise std in 0..255 (8-bit pixel units), got -1"),
    (["--task", "deblur", "--blur-sigma", "-1"],
     "--blur-sigma: expected a noise std in 0..255 (8-bit pixel units), got -1"),
    (["--task", "deblur", "--blur-sigma", "300"],
     "--blur-sigma: expected a noise std in 0..255 (8-bit pixel units), got 300"),
    # was "size: expected a positive int, got 0"
    (["--task", "sr", "--factor", "32", "--size", "16"],
     "--factor: 32 needs a --size of at least 32 (a multiple of the factor, and SSIM's 11x11 "
     "window), got --size 16"),
])
def test_cli_demo_names_its_options_before_any_work(tmp_path, capsys, monkeypatch, argv,
                                                     message):
    import dipprior.demo

    def no_work(*args, **kwargs):
        raise AssertionError("the demo ran")

    monkeypatch.setattr(dipprior.demo, "run_demo", no_work)
    assert main(["demo", *argv, "--out", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.strip() == f"dipprior demo: error: {message}"
    assert not (tmp_path / "d").exists()


def test_cli_demo(tmp_path, capsys):
    args = ["demo", "--images", "chelsea", "--size", "32", "--dip-iterations", "3",
            "--dip-channels", "8", "--ddpm-steps", "2", "--steps", "2", "--t0", "20",
            "--task", "sr", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "super-resolution x4" in out and "## DIP->DDPM" in out and "## Bicubic" in out
    assert (tmp_path / "o" / "demo.png").is_file() and (tmp_path / "o" / "results.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "o" / "images" / "sr").iterdir()) == [
        "chelsea_Bicubic.png", "chelsea_Classical-DDPM.png",
        "chelsea_Classical-x4-default.png", "chelsea_DIP-DDPM.png", "chelsea_DIP.png",
        "chelsea_DiffPIR-noise.png"]
    assert main(["demo", "--images", "lena", "--out", str(tmp_path / "x")]) == 2
    assert "unknown sample images" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
