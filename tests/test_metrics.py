"""Metrics against independent references: scikit-image, colour-science, numpy, published data."""

import csv
import io
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from dipprior import metrics as M

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Table 1: (L1, a1, b1, L2, a2, b2, dE00).
SHARMA_2005 = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _pair(shape=(3, 24, 20), seed=0, sigma=0.1):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0, 1, shape)
    pred = np.clip(target + sigma * rng.standard_normal(shape), 0, 1)
    return pred, target


def _hwc(x):
    return np.moveaxis(x, 0, -1)


# ----------------------------------------------------------------------------- CIEDE2000


def test_sharma_table_is_complete():
    assert len(SHARMA_2005) == 34


@pytest.mark.parametrize("row", SHARMA_2005, ids=[f"pair{i + 1}" for i in range(34)])
def test_ciede2000_matches_sharma_2005(row):
    lab1, lab2, expected = np.array(row[:3]), np.array(row[3:6]), row[6]
    assert abs(float(M.ciede2000(lab1, lab2)) - expected) < 1e-4


def test_ciede2000_vectorised_over_pairs():
    table = np.array(SHARMA_2005)
    np.testing.assert_allclose(M.ciede2000(table[:, :3], table[:, 3:6]), table[:, 6], atol=1e-4)


def test_rgb_to_lab_matches_hand_formulas():
    """sRGB (IEC 61966-2-1 decoding) -> XYZ (sRGB matrix) -> Lab (D65 white), written out."""
    rgb = np.random.default_rng(1).uniform(0, 1, (50, 3))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                       [0.0193, 0.1192, 0.9505]])
    xyz = linear @ matrix.T
    white = np.array([0.3127 / 0.3290, 1.0, (1 - 0.3127 - 0.3290) / 0.3290])
    r = xyz / white
    f = np.where(r > (6 / 29) ** 3, np.cbrt(r), r / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], -1)
    np.testing.assert_allclose(M.rgb_to_lab(rgb), lab, atol=0.02)


def test_delta_e_matches_colour_science_directly():
    import colour

    pred, target = _pair(seed=2)
    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    lab_p = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(_hwc(pred), d65), d65)
    lab_t = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(_hwc(target), d65), d65)
    expected = colour.delta_E(lab_p, lab_t, method="CIE 2000").mean()
    assert M.delta_e(pred, target) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- PSNR, MSE, MAE, SSIM


def test_psnr_mse_mae_match_references():
    pred, target = _pair()
    assert M.psnr(pred, target) == pytest.approx(
        peak_signal_noise_ratio(target, pred, data_range=1), rel=1e-12
    )
    assert M.mse(pred, target) == pytest.approx(mean_squared_error(target, pred), rel=1e-12)
    assert M.mae(pred, target) == pytest.approx(np.mean(np.abs(pred - target)), rel=1e-12)


def _ssim_by_hand(x, y):
    """SSIM of Wang et al. from scipy Gaussian filters (sigma 1.5, truncate 3.5 -> 11x11 window),
    population covariances, C1=(0.01)^2, C2=(0.03)^2; mean over the valid part of the map."""
    def blur(z):
        return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_matches_wang_settings_by_hand():
    pred, target = _pair(seed=3)
    by_hand = np.mean([_ssim_by_hand(pred[c], target[c]) for c in range(3)])
    assert M.ssim(pred, target) == pytest.approx(by_hand, abs=1e-10)
    reference = structural_similarity(
        _hwc(pred), _hwc(target), channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0,
    )
    assert M.ssim(pred, target) == pytest.approx(reference, abs=1e-12)


def test_identical_images():
    _, target = _pair()
    assert M.psnr(target, target) == math.inf
    assert M.ssim(target, target) == pytest.approx(1.0)
    assert M.mse(target, target) == 0.0
    assert M.mae(target, target) == 0.0
    assert M.delta_e(target, target) == pytest.approx(0.0, abs=1e-9)


def test_offset_of_001_gives_40_db():
    target = np.random.default_rng(4).uniform(0, 0.99, (3, 16, 16))
    assert M.psnr(target + 0.01, target) == pytest.approx(40.0, abs=1e-8)
    assert M.mse(target + 0.01, target) == pytest.approx(1e-4, rel=1e-8)
    assert M.mae(target + 0.01, target) == pytest.approx(1e-2, rel=1e-8)


def test_global_scale_is_not_forgiven():
    """0.5 * x has the same structure as x after min-max scaling; we must not forgive it."""
    target = np.random.default_rng(5).uniform(0.2, 1, (3, 32, 32))
    pred = 0.5 * target
    expected = 10 * math.log10(1 / np.mean((0.5 * target) ** 2))
    value = M.psnr(pred, target)
    assert math.isfinite(value) and value == pytest.approx(expected, rel=1e-12)
    assert value < 15
    assert M.mse(pred, target) == pytest.approx(np.mean((0.5 * target) ** 2))
    assert M.ssim(pred, target) < 0.95
    assert M.delta_e(pred, target) > 5


def test_prediction_is_clamped_not_rescaled():
    rng = np.random.default_rng(6)
    target = rng.uniform(0, 1, (3, 16, 16))
    pred = target + 0.3 * rng.standard_normal(target.shape)  # leaves [0, 1] in many pixels
    assert pred.min() < 0 and pred.max() > 1
    clipped = np.clip(pred, 0, 1)
    for fn in (M.psnr, M.ssim, M.mse, M.mae, M.delta_e):
        assert fn(pred, target) == pytest.approx(fn(clipped, target), rel=1e-12)
    assert M.mse(pred, target) == pytest.approx(np.mean((clipped - target) ** 2), rel=1e-12)
    ones = np.ones((3, 16, 16))
    assert M.psnr(2 * ones, ones) == math.inf  # clamped to 1 == target


def test_target_slightly_out_of_range_tolerated_far_rejected():
    pred, target = _pair()
    target[0, 0, 0] = 1 + 1e-5
    assert math.isfinite(M.psnr(pred, target))
    target[0, 0, 0] = 1.2
    with pytest.raises(ValueError, match="target"):
        M.psnr(pred, target)
    with pytest.raises(ValueError, match="target"):
        M.mse(pred, 255 * target)


# ----------------------------------------------------------------------------- layouts and batches


def test_layouts_and_torch_agree():
    pred, target = _pair(seed=7)
    reference = M.evaluate(pred, target)
    for p, t in [
        (_hwc(pred), _hwc(target)),
        (torch.from_numpy(pred), torch.from_numpy(target)),
        (torch.from_numpy(pred).float(), torch.from_numpy(target).float()),
    ]:
        got = M.evaluate(p, t)
        assert got.keys() == {"psnr", "ssim", "mse", "mae", "delta_e"}
        for key in got:
            assert isinstance(got[key], float)
            assert got[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("fn", [M.psnr, M.ssim, M.mse, M.mae, M.delta_e])
def test_batch_equals_loop(fn):
    pred, target = _pair(shape=(3, 3, 16, 16), seed=8)
    batch = fn(torch.from_numpy(pred), torch.from_numpy(target))
    assert isinstance(batch, np.ndarray) and batch.shape == (3,)
    loop = [fn(pred[i], target[i]) for i in range(3)]
    np.testing.assert_allclose(batch, loop, rtol=1e-12)
    nhwc = fn(np.moveaxis(pred, 1, -1), np.moveaxis(target, 1, -1))
    np.testing.assert_allclose(nhwc, loop, rtol=1e-12)


def test_evaluate_batch_returns_arrays():
    pred, target = _pair(shape=(2, 3, 16, 16), seed=9)
    out = M.evaluate(pred, target)
    for key, value in out.items():
        assert value.shape == (2,), key
        assert value[1] == pytest.approx(getattr(M, key)(pred[1], target[1]))


# ----------------------------------------------------------------------------- Y channel, border


def test_rgb_to_y_bt601():
    assert M.rgb_to_y(np.array([1.0, 1.0, 1.0])) == pytest.approx(235 / 255)
    assert M.rgb_to_y(np.array([0.0, 0.0, 0.0])) == pytest.approx(16 / 255)
    assert M.rgb_to_y(np.array([1.0, 0.0, 0.0])) == pytest.approx((16 + 65.481) / 255)


def test_y_channel_and_crop_border_by_hand():
    pred, target = _pair(shape=(3, 30, 26), seed=10)
    k = 4

    def y(x):
        r, g, b = x[:, k:-k, k:-k]
        return 16 / 255 + (65.481 * r + 128.553 * g + 24.966 * b) / 255

    yp, yt = y(pred), y(target)
    assert M.psnr(pred, target, y_channel=True, crop_border=k) == pytest.approx(
        10 * math.log10(1 / np.mean((yp - yt) ** 2)), rel=1e-12
    )
    assert M.ssim(pred, target, y_channel=True, crop_border=k) == pytest.approx(
        _ssim_by_hand(yp, yt), abs=1e-10
    )
    cropped = pred[:, k:-k, k:-k], target[:, k:-k, k:-k]
    assert M.psnr(pred, target, crop_border=k) == pytest.approx(M.psnr(*cropped), rel=1e-12)
    assert M.mae(pred, target, crop_border=k) == pytest.approx(M.mae(*cropped), rel=1e-12)
    out = M.evaluate(pred, target, y_channel=True, crop_border=k)
    assert out["psnr"] == M.psnr(pred, target, y_channel=True, crop_border=k)
    assert out["mse"] == M.mse(*cropped)


@pytest.mark.parametrize("k", [-1, 1.5, True, 12])
def test_bad_crop_border(k):
    pred, target = _pair(shape=(3, 24, 20))
    with pytest.raises(ValueError, match="crop_border"):
        M.psnr(pred, target, crop_border=k)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
    pred, target = _pair()
    with pytest.raises(ValueError, match="pred.*shape"):
        M.psnr(pred[:, :10], target)
    with pytest.raises(ValueError, match="pred.*3 colour channels"):
        M.psnr(np.zeros((4, 16, 16)), np.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match="pred.*dimensions"):
        M.mse(pred[0], target[0])
    with pytest.raises(ValueError, match="pred.*dimensions"):
        M.mse(pred[None, None], target[None, None])
    bad = pred.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="pred.*NaN"):
        M.mae(bad, target)
    bad = target.copy()
    bad[0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="target.*NaN or inf"):
        M.mae(pred, bad)
    with pytest.raises(TypeError, match="pred.*uint8"):
        M.psnr((pred * 255).astype(np.uint8), target)
    with pytest.raises(TypeError, match="target.*int64"):
        M.psnr(torch.from_numpy(pred), torch.zeros(3, 24, 20, dtype=torch.int64))
    with pytest.raises(TypeError, match="pred"):
        M.psnr(np.full((3, 4, 4), "a"), np.zeros((3, 4, 4)))
    with pytest.raises(TypeError, match="pred"):
        M.psnr(pred.astype(np.complex128), target)
    with pytest.raises(ValueError, match="pred.*11x11"):
        M.ssim(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))


# ----------------------------------------------------------------------------- results table


def _rows():
    return [
        {"Image": "a", "psnr": 30.0, "ssim": 0.9, "mse": 1e-3, "mae": 0.02, "delta_e": 2.0},
        {"Image": "b", "psnr": 20.0, "ssim": 0.7, "mse": 1e-2, "mae": 0.06, "delta_e": 4.5},
    ]


def test_results_table_markdown():
    table = M.results_table(_rows())
    assert table.columns == ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E"]
    lines = table.to_markdown().splitlines()
    assert lines[0].split("|")[1:-1] == [
        " Image   ", "  PSNR ", "   SSIM ", "      MSE ", "      MAE ", " Delta E ",
    ]
    assert set(lines[1].replace("|", "").split()) == {"-------", "----:", "-----:", "-------:",
                                                     "------:"}
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "a", "30.00", "0.9000", "0.001000", "0.020000", "2.000"
    ]
    assert [c.strip() for c in lines[4].split("|")[1:-1]] == [
        "Average", "25.00", "0.8000", "0.005500", "0.040000", "3.250"
    ]
    assert str(table) == table.to_markdown()


def test_results_table_csv_full_precision_and_atomic(tmp_path):
    rows = _rows()
    rows[0]["psnr"] = 31.123456789012
    path = tmp_path / "t.csv"
    text = M.results_table(rows).to_csv(path)
    assert path.read_text() == text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["Image"] for r in parsed] == ["a", "b", "Average"]
    assert float(parsed[0]["PSNR"]) == 31.123456789012
    assert float(parsed[2]["Delta E"]) == pytest.approx(3.25)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_results_table_groups_by_method_and_keeps_extras():
    rows = []
    for method, nfe, offset in [("DDPM", 1000, 0.0), ("ours", 50, 2.0)]:
        for image, base in [("a", 30.0), ("b", 20.0)]:
            rows.append({"Image": image, "Method": method, "psnr": base + offset, "ssim": 0.8,
                         "mse": 0.01, "mae": 0.05, "delta_e": 3.0, "NFE": nfe,
                         "Seconds": 1.5 + offset, "Note": "x"})
    table = M.results_table(rows)
    assert table.columns == ["Image", "Method", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "NFE",
                             "Seconds", "Note"]
    averages = [r for r in table.rows if r["Image"] == "Average"]
    assert [(r["Method"], r["PSNR"], r["NFE"], r["Seconds"]) for r in averages] == [
        ("DDPM", 25.0, 1000.0, 1.5), ("ours", 27.0, 50.0, 3.5)
    ]
    assert "Note" not in averages[0]
    last = table.to_markdown().splitlines()[-1]
    assert [c.strip() for c in last.split("|")[1:-1]] == [
        "Average", "ours", "27.00", "0.8000", "0.010000", "0.050000", "3.000", "50", "3.50", ""
    ]


def test_results_table_columns_inf_and_numpy_values():
    rows = _rows()
    rows[0]["psnr"] = np.float64(np.inf)
    rows[1]["psnr"] = np.array(20.0)
    table = M.results_table(rows, columns=["Image", "psnr", "Delta E"], average=False)
    assert table.columns == ["Image", "PSNR", "Delta E"]
    assert len(table.rows) == 2
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in
             table.to_markdown().splitlines()[2:]]
    assert cells == [["a", "inf", "2.000"], ["b", "20.00", "4.500"]]


def test_results_table_from_evaluate():
    pred, target = _pair(shape=(2, 3, 16, 16), seed=11)
    out = M.evaluate(pred, target)
    rows = [{"Image": f"im{i}", **{k: v[i] for k, v in out.items()}} for i in range(2)]
    table = M.results_table(rows)
    assert table.rows[-1]["PSNR"] == pytest.approx(out["psnr"].mean())


def test_results_table_bad_input():
    with pytest.raises(ValueError, match="rows"):
        M.results_table([])
    with pytest.raises(ValueError, match="Image"):
        M.results_table([{"psnr": 1.0}])
    with pytest.raises(TypeError, match="rows"):
        M.results_table([("a", 1.0)])
    with pytest.raises(ValueError, match="columns"):
        M.results_table(_rows(), columns=["Image", "FID"])
    with pytest.raises(ValueError, match="several values"):
        M.results_table([{"Image": "a", "psnr": np.array([1.0, 2.0])}])


@pytest.mark.slow
def test_example_metrics_table_runs(tmp_path):
    """The README's main job: prints the seed's table for noisy sample images."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "metrics_table.py"
    out = subprocess.run(
        [sys.executable, str(script), "--size", "32", "--csv", str(tmp_path / "t.csv")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "seed=0" in out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E"
    ]
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "astronaut", "chelsea", "coffee", "rocket", "Average"
    ]
    assert (tmp_path / "t.csv").read_text().startswith("Image,PSNR,SSIM,MSE,MAE,Delta E\n")
