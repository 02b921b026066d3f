"""Demosaicing through the task contract: the operator against colour-demosaicing, its crop,
its registry entry and the command line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dipprior.cli import main
from dipprior.io import load_image, sample_image, save_image
from dipprior.operators import Demosaic, demosaicing, make_task
from dipprior.operators.demosaic import PATTERNS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import colour_demosaicing as cd


def test_patterns_are_exported_once():
    assert PATTERNS == ("RGGB", "BGGR", "GRBG", "GBRG")


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_forward_is_colour_demosaicings_mosaic(pattern):
    x = torch.rand(3, 6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = Demosaic(pattern)
    cfa = cd.mosaicing_CFA_Bayer(x.permute(1, 2, 0).numpy(), pattern)
    np.testing.assert_allclose(op(x).sum(0).numpy(), cfa, atol=1e-12)
    masks = np.stack(cd.masks_CFA_Bayer((6, 10), pattern)).astype(float)
    np.testing.assert_array_equal(op.mask(x.shape).numpy(), masks)


def test_adjoint_and_hard_constraint():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    op = Demosaic("GRBG")
    assert torch.allclose((op(x) * y).sum(), (x * op.adjoint(y)).sum())
    x0 = torch.rand(3, 8, 8, generator=g)
    out = op.proximal(x0, op(x[0]), 1.0, sigma=0.0)  # noise-free: y is kept exactly
    assert torch.equal(op(out), op(x[0])) and torch.equal(out * (1 - op.mask(x0.shape)),
                                                          x0 * (1 - op.mask(x0.shape)))


@pytest.mark.parametrize("method, name", [("bilinear", "demosaicing_CFA_Bayer_bilinear"),
                                          ("malvar2004", "demosaicing_CFA_Bayer_Malvar2004"),
                                          ("menon2007", "demosaicing_CFA_Bayer_Menon2007")])
def test_classical_restorations_are_colour_demosaicings(method, name):
    clean = sample_image("astronaut", size=32)
    op = Demosaic("BGGR")
    y = op.degrade(clean)
    expected = getattr(cd, name)(op(clean).sum(0).double().numpy(), "BGGR")
    np.testing.assert_allclose(demosaicing(y, op, method).permute(1, 2, 0).numpy(), expected,
                               atol=1e-5)
    if method == "menon2007":  # the classical start of the chain
        assert torch.equal(op.classical(y), demosaicing(y, op))
    with pytest.raises(ValueError, match="method"):
        demosaicing(y, op, "ahd")


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
@pytest.mark.parametrize("top, left", [(0, 0), (0, 1), (1, 0), (3, 5)])
def test_a_window_keeps_the_pattern_of_its_pixels(pattern, top, left):
    op = Demosaic(pattern)
    window = op.crop(top, left, 8, 6)
    full = op.mask((16, 16))
    assert torch.equal(window.mask((8, 6)), full[:, top:top + 8, left:left + 6])


def test_registry_entry_and_bad_input():
    op = make_task("demosaic", cfa_sigma=5.1, pattern="GRBG")
    assert isinstance(op, Demosaic) and op.noise_sigma == pytest.approx(0.02)
    assert op.task == "demosaic" and not op.keeps_grey and op.classical_name == "Menon 2007"
    with pytest.raises(ValueError, match="cfa_sigma: expected a noise std in 0..255"):
        make_task("demosaic", cfa_sigma=-1)
    with pytest.raises(ValueError, match="pattern"):
        Demosaic("RGBG")
    with pytest.raises(ValueError, match="3 channels"):
        Demosaic()(torch.rand(1, 4, 4))


def test_cli_restores_a_grey_raw_image_in_colour(tmp_path, capsys):
    clean = sample_image("chelsea", size=24)
    raw = Demosaic()(clean).sum(0, keepdim=True)  # what a camera's sensor records
    save_image(raw, tmp_path / "raw.png")
    code = main(["restore", str(tmp_path / "raw.png"), "--task", "demosaic", "--steps", "1",
                 "--samples", "1", "--out", str(tmp_path / "out.png"), "--no-progress"])
    assert code == 0
    out = load_image(tmp_path / "out.png")
    assert out.shape == (3, 24, 24) and not torch.equal(out[0], out[1])  # colour, not grey
    assert main(["restore", str(tmp_path / "raw.png"), "--task", "demosaic", "--simulate",
                 "--sigma", "300", "--out", str(tmp_path / "x.png")]) == 2
    assert "--sigma: expected a noise std in 0..255" in capsys.readouterr().err


def test_cli_simulates_a_grey_photo_as_a_colour_filter_array_would(tmp_path):
    """Was: the grey shortcut degraded one channel and the operator refused it."""
    save_image(sample_image("chelsea", 24).mean(0, keepdim=True), tmp_path / "grey.png")
    assert main(["restore", str(tmp_path / "grey.png"), "--task", "demosaic", "--simulate",
                 "--steps", "1", "--samples", "1", "--out", str(tmp_path / "out.png"),
                 "--no-progress"]) == 0
