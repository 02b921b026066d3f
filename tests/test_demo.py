"""`dipprior demo`: the main job end to end on a tiny crop with a tiny budget."""

import csv
import sys

import pytest
import torch

from dipprior import dip
from dipprior.cli import main
from dipprior.demo import COLUMNS, METHODS, DemoConfig, run_demo, save_figure
from dipprior.io import load_image, sample_image

TINY = {"images": ("chelsea",), "size": 32, "dip_iterations": 4, "dip_channels": 8,
        "ddpm_steps": 3, "steps": 2, "t0": 30}


@pytest.mark.slow
def test_demo_end_to_end_with_the_shipped_prior(tmp_path, monkeypatch):
    fits = []
    original = dip.fit

    def counting_fit(*args, **kwargs):
        fits.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dip, "fit", counting_fit)
    lines = []
    result = run_demo(DemoConfig(**TINY), out=tmp_path / "demo", progress=False,
                      log=lines.append)
    assert len(fits) == 1  # DIP alone and DIP->DDPM share one fit per image

    table = result.table
    assert table.columns == COLUMNS
    assert COLUMNS[:7] == ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E"]
    per_image = [r for r in table.rows if r["Image"] != "Average"]
    assert [(r["Image"], r["Method"]) for r in per_image] == [("chelsea", m) for m in METHODS]
    assert [r["Method"] for r in table.rows if r["Image"] == "Average"] == list(METHODS)
    nfe = {r["Method"]: r["NFE"] for r in per_image}
    assert nfe == {"DIP": 0, "DDPM": 3, "DIP->DDPM": 2}
    seconds = {r["Method"]: r["Seconds"] for r in per_image}
    assert seconds["DIP->DDPM"] >= seconds["DIP"] > 0  # includes the shared DIP fit
    clean = sample_image("chelsea", size=32)
    for r in per_image:
        image = result.images["chelsea"][r["Method"]]
        assert image.shape == clean.shape and 0 <= float(image.min()) <= float(image.max()) <= 1
        mse = float((image - clean).square().mean())
        assert r["MSE"] == pytest.approx(mse, rel=1e-4)  # scored against the clean crop
    assert list(result.images["chelsea"]) == ["Ground truth", "Degraded", *METHODS]

    out = tmp_path / "demo"
    assert result.figure == out / "demo.png" and result.csv == out / "results.csv"
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(result.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and len(rows) == 6
    text = result.markdown.read_text()
    for method in METHODS:
        assert f"## {method}" in text
    assert "| Image   |  PSNR |   SSIM |      MSE |      MAE | Delta E | NFE | Seconds |" in text
    assert any("Total:" in line for line in lines)
    assert result.cpu_seconds > 0 and result.wall_seconds > 0


def test_demo_is_deterministic_and_inpaints_with_a_given_model(tmp_path, make_unet):
    from dipprior.diffusion import Scheduler

    model = make_unet().eval()
    config = DemoConfig(task="inpaint", **TINY)
    a = run_demo(config, out=None, model=model, scheduler=Scheduler(), progress=False, log=None)
    b = run_demo(config, out=None, model=model, scheduler=Scheduler(), progress=False, log=None)
    assert a.figure is None and a.csv is None
    for method in METHODS:
        torch.testing.assert_close(a.images["chelsea"][method], b.images["chelsea"][method])
    degraded = a.images["chelsea"]["Degraded"]
    missing = (degraded == 0).all(dim=0).float().mean()
    assert 0.4 < float(missing) < 0.6  # half of the pixels are missing


@pytest.mark.parametrize("stand_in", [None, "mock"])
def test_figure_without_matplotlib_is_a_plain_grid(tmp_path, monkeypatch, stand_in):
    # None: import matplotlib -> ImportError; "mock": what colour-science leaves in sys.modules
    # when matplotlib is not installed
    from unittest import mock

    fake = mock.MagicMock() if stand_in else None
    monkeypatch.setitem(sys.modules, "matplotlib", fake)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", fake)
    panels = {name: {c: torch.rand(3, 8, 10) for c in ("Ground truth", "Degraded", "DIP")}
              for name in ("a", "b")}
    path = save_figure(panels, None, tmp_path / "grid.png")
    grid = load_image(path)
    assert grid.shape == (3, 2 * 8 + 2, 3 * 10 + 2 * 2)
    torch.testing.assert_close(grid[:, :8, 12:22], panels["a"]["Degraded"], atol=1 / 255,
                               rtol=0)


def test_demo_config_rejects_bad_input():
    with pytest.raises(ValueError, match="task"):
        DemoConfig(task="deblur")
    with pytest.raises(ValueError, match="images"):
        DemoConfig(images=("lena",))
    with pytest.raises(ValueError, match="dip_iterations"):
        DemoConfig(dip_iterations=0)
    with pytest.raises(ValueError, match="divisible"):
        DemoConfig(task="sr", size=30, factor=4)


def test_cli_demo(tmp_path, capsys):
    args = ["demo", "--images", "chelsea", "--size", "32", "--dip-iterations", "3",
            "--dip-channels", "8", "--ddpm-steps", "2", "--steps", "2", "--t0", "20",
            "--task", "sr", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "super-resolution x4" in out and "## DIP->DDPM" in out
    assert (tmp_path / "o" / "demo.png").is_file() and (tmp_path / "o" / "results.csv").is_file()
    assert main(["demo", "--images", "lena", "--out", str(tmp_path / "x")]) == 2
    assert "unknown sample images" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
