"""`dipprior restore DIR` under torchrun: the images split across ranks, one metrics file."""

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

from dipprior.cli import main
from dipprior.io import load_image, sample_image, save_image

TINY = ["--task", "denoise", "--simulate", "--init", "dip", "--dip-iterations", "3",
        "--dip-channels", "8", "--steps", "2", "--t0", "20", "--no-progress", "--seed", "4"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_unet):
    from dipprior.diffusion import Scheduler, save

    return str(save(make_unet(perturb=0.05), Scheduler(), tmp_path_factory.mktemp("m") / "m"))


def _photos(folder, n=3):
    folder.mkdir()
    for i, name in enumerate(("chelsea", "coffee", "astronaut")[:n]):
        save_image(sample_image(name, 16), folder / f"{i}.png")
    return folder


def _images_in_metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return [row["Image"] for row in csv.DictReader(f)]


def _torchrun(src, out, model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "dipprior", "restore", str(src), "--model", model_dir, "--out", str(out), *TINY],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_two_gloo_ranks_split_a_folder_and_resume(tmp_path, model_dir):
    src, out = _photos(tmp_path / "photos"), tmp_path / "out"
    stdout = _torchrun(src, out, model_dir)
    assert "restored 3 of 3 images" in stdout and "on 2 ranks" in stdout
    assert "[rank 0] wrote" in stdout and "[rank 1] wrote" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "0.png", "0_dip.png", "1.png", "1_dip.png", "2.png", "2_dip.png", "metrics.csv"]
    assert _images_in_metrics(out) == ["0.png", "1.png", "2.png"]  # one file, no parts left

    # the same images as one process restores them (image i seeded --seed + i on any rank)
    alone = tmp_path / "alone"
    assert main(["restore", str(src), "--model", model_dir, "--out", str(alone), *TINY]) == 0
    for name in ("0.png", "1.png", "2.png"):
        assert torch.equal(load_image(out / name), load_image(alone / name))

    # resumable: only the missing image (rank 1's) is restored again, the rest untouched
    (out / "1.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    stdout = _torchrun(src, out, model_dir)
    assert "restored 1 of 3 images" in stdout and "(2 skipped: output exists)" in stdout
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {k: after[k] for k in ("0.png", "0_dip.png", "2.png", "2_dip.png")} == {
        k: before[k] for k in ("0.png", "0_dip.png", "2.png", "2_dip.png")}
    assert torch.equal(load_image(out / "1.png"), load_image(alone / "1.png"))
    assert _images_in_metrics(out) == ["0.png", "1.png", "2.png"]


def test_the_rows_an_interrupted_torchrun_run_kept_are_merged(tmp_path, model_dir):
    src, out = _photos(tmp_path / "photos", n=2), tmp_path / "out"
    assert main(["restore", str(src), "--model", model_dir, "--out", str(out), *TINY]) == 0
    # as if rank 1 of an interrupted run had restored 1.png: its row only in its part
    shutil.copy(out / "metrics.csv", out / "metrics.rank1.csv")
    with open(out / "metrics.csv") as f:
        lines = f.readlines()
    (out / "metrics.csv").write_text("".join(lines[:2]))
    assert _images_in_metrics(out) == ["0.png"]
    assert main(["restore", str(src), "--model", model_dir, "--out", str(out), *TINY]) == 0
    assert _images_in_metrics(out) == ["0.png", "1.png"]
    assert not (out / "metrics.rank1.csv").exists()
