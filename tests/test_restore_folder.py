"""`dipprior restore FOLDER`: every image of a folder, resumable, with a metrics table."""

import csv
import time

import pytest
import torch

from dipprior.cli import main
from dipprior.io import load_image, sample_image, save_image

SIZE = 16
TINY = ["--init", "dip", "--dip-iterations", "3", "--dip-channels", "8", "--steps", "2",
        "--t0", "20", "--no-progress"]
COLUMNS = ["Image", "PSNR", "SSIM", "MSE", "MAE", "Delta E", "DIP PSNR", "t0", "NFE", "Seconds"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_unet):
    from dipprior.diffusion import Scheduler, save

    return str(save(make_unet(perturb=0.05), Scheduler(), tmp_path_factory.mktemp("m") / "m"))


def _photos(folder, names=("chelsea", "coffee")):
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        save_image(sample_image(name, SIZE), folder / f"{i}.png")
    return folder


def _restore(src, out, model_dir, *extra):
    return main(["restore", str(src), "--task", "denoise", "--model", model_dir,
                 "--out", str(out), *TINY, *extra])


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_folder_is_restored_once_and_resumed(tmp_path, model_dir, capsys, monkeypatch):
    from dipprior.cli import restore

    src, out = _photos(tmp_path / "photos"), tmp_path / "out" / "restored"  # out is created
    assert _restore(src, out, model_dir, "--simulate", "--seed", "5") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "0.png", "0_dip.png", "1.png", "1_dip.png", "metrics.csv"]
    for name in ("0.png", "0_dip.png", "1.png", "1_dip.png"):
        assert load_image(out / name).shape == (3, SIZE, SIZE)
    rows = _rows(out)
    assert [r["Image"] for r in rows] == ["0.png", "1.png"]
    for r in rows:
        assert 0 < float(r["PSNR"]) < 100 and 0 < float(r["DIP PSNR"]) < 100
        # the denoising DIP preset judges DIP's error against the prior's own chain (2 more NFE)
        assert int(r["NFE"]) <= 4 and int(r["t0"]) == 20 and float(r["Seconds"]) > 0
    assert "restored 2 of 2 images" in capsys.readouterr().out

    # a second run has nothing to do: no model is loaded, no file is touched
    monkeypatch.setattr(restore, "load_prior", lambda args: pytest.fail("model loaded"))
    before = _mtimes(out)
    start = time.perf_counter()
    assert _restore(src, out, model_dir, "--simulate", "--seed", "5") == 0
    assert time.perf_counter() - start < 5
    assert _mtimes(out) == before
    assert "restored 0 of 2 images" in capsys.readouterr().out
    monkeypatch.undo()

    # an image added later is the only one restored; the other rows are kept as they were
    save_image(sample_image("astronaut", SIZE), src / "2.png")
    assert _restore(src, out, model_dir, "--simulate", "--seed", "5") == 0
    after = _mtimes(out)
    assert {k: after[k] for k in before if k != "metrics.csv"} == {
        k: v for k, v in before.items() if k != "metrics.csv"}
    assert {"2.png", "2_dip.png"} <= set(after)
    new_rows = _rows(out)
    assert [r["Image"] for r in new_rows] == ["0.png", "1.png", "2.png"]
    assert new_rows[:2] == rows
    assert "restored 1 of 3 images into" in capsys.readouterr().out

    # image i of the folder is restored as the single image with seed + i
    single = tmp_path / "single.png"
    assert main(["restore", str(src / "1.png"), "--task", "denoise", "--model", model_dir,
                 "--out", str(single), "--simulate", "--seed", "6", *TINY]) == 0
    torch.testing.assert_close(load_image(single), load_image(out / "1.png"), rtol=0, atol=0)
    assert f"PSNR {float(rows[1]['PSNR']):.2f} dB" in capsys.readouterr().out


def test_folder_of_observations_without_dip_writes_no_metrics(tmp_path, model_dir):
    src, out = _photos(tmp_path / "photos", ("chelsea",)), tmp_path / "out"
    assert main(["restore", str(src), "--task", "denoise", "--model", model_dir, "--out",
                 str(out), "--init", "observation", "--steps", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png"]


@pytest.mark.parametrize("case, needle", [
    ("empty", "holds no images"),
    ("out_is_file", "is a file"),
    ("out_is_input", "input folder"),
    ("out_looks_like_png", "looks like a file name"),
    ("save_dip", "--save-dip"),
    ("broken_image", "broken.png"),
    ("same_stem", "would both be written"),
    ("inpaint_without_mask", "--mask"),
    ("mask_of_other_size", "1.png"),
    ("bad_metrics_csv", "metrics.csv"),
])
def test_bad_folder_inputs_are_one_line_errors(tmp_path, model_dir, capsys, case, needle):
    src = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    extra = []
    if case == "empty":
        src = tmp_path / "empty"
        src.mkdir()
        (src / "notes.txt").write_text("no images here")
    elif case == "out_is_file":
        out.write_text("a file")
    elif case == "out_is_input":
        out = src
    elif case == "out_looks_like_png":
        out = tmp_path / "restored.png"
    elif case == "save_dip":
        extra = ["--save-dip", str(tmp_path / "dip.png")]
    elif case == "broken_image":
        (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "same_stem":
        save_image(sample_image("rocket", SIZE), src / "0.jpg")
    elif case == "inpaint_without_mask":
        extra = ["--task", "inpaint"]
    elif case == "mask_of_other_size":
        save_image(torch.ones(3, SIZE, SIZE), tmp_path / "mask.png")
        save_image(sample_image("rocket", 2 * SIZE), src / "1.png")
        extra = ["--task", "inpaint", "--mask", str(tmp_path / "mask.png")]
    elif case == "bad_metrics_csv":
        out.mkdir()
        (out / "metrics.csv").write_text("name,score\nx,1\n")
        extra = ["--simulate"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = _restore(src, out, model_dir, *extra)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dipprior restore: error:"), err
    assert needle in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_real_noisy_image_without_sigma_uses_the_estimate(tmp_path, model_dir, capsys):
    from dipprior.estimators import estimate_noise_sigma

    clean = sample_image("chelsea", 64)
    noisy = (clean + 20 / 255 * torch.randn(clean.shape, generator=torch.Generator()
                                             .manual_seed(0))).clamp(0, 1)
    save_image(noisy, tmp_path / "noisy.png")
    estimate = 255 * float(estimate_noise_sigma(load_image(tmp_path / "noisy.png")[None])[0])
    assert estimate == pytest.approx(20, rel=0.1)
    base = ["restore", str(tmp_path / "noisy.png"), "--task", "denoise", "--model", model_dir,
            "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "auto.png")]) == 0
    assert f"sigma estimated: {estimate:.1f}" in capsys.readouterr().out
    assert main([*base, "--sigma", str(estimate), "--out", str(tmp_path / "given.png")]) == 0
    assert "estimated" not in capsys.readouterr().out
    assert torch.equal(load_image(tmp_path / "auto.png"), load_image(tmp_path / "given.png"))
    assert main([*base, "--sigma", "40", "--out", str(tmp_path / "other.png")]) == 0
    assert not torch.equal(load_image(tmp_path / "auto.png"), load_image(tmp_path / "other.png"))
