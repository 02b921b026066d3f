import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from skimage import io as skio

from conftest import tiny_unet
from dipprior.cli import main as cli_main
from dipprior.diffusion import (
    Augmentation,
    PatchDataset,
    Scheduler,
    TimestepDistribution,
    UNet,
    load,
    train,
)
from dipprior.diffusion.train import _learning_rate


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Smooth colour gradients (learnable structure) plus one grey and one RGBA image."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:28] / 24.0
    for i in range(4):
        a, b, c = rng.uniform(-1, 1, 3)
        img = np.stack([0.5 + 0.4 * np.sin(a * 3 * xx + b * 2 * yy + k + c) for k in range(3)], -1)
        skio.imsave(folder / f"img{i}.png", (img * 255).round().astype(np.uint8),
                    check_contrast=False)
    skio.imsave(folder / "grey.png", (yy * 200).astype(np.uint8), check_contrast=False)
    rgba = np.concatenate([np.full((24, 28, 3), 90, np.uint8), np.full((24, 28, 1), 255, np.uint8)],
                          axis=-1)
    skio.imsave(folder / "rgba.png", rgba, check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _net(dropout=0.1):
    return tiny_unet(dropout=dropout)


# ------------------------------------------------------------------- dataset
def test_patch_dataset(images):
    ds = PatchDataset(images, patch_size=16)
    assert len(ds) == 6
    a = ds.sample_batch(5, torch.Generator().manual_seed(0))
    b = ds.sample_batch(5, torch.Generator().manual_seed(0))
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32 and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1
    grey = ds.patch(ds.files.index(images / "grey.png"), torch.Generator().manual_seed(1))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = ds.patch(ds.files.index(images / "rgba.png"))
    assert torch.allclose(rgba, torch.full_like(rgba, 90 / 255))
    # a patch is a (possibly flipped) crop of the image
    full = torch.from_numpy(ds.image(0)).permute(2, 0, 1).float() / 255
    p = ds.patch(0, torch.Generator().manual_seed(3))
    crops = [full[:, i:i + 16, j:j + 16] for i in range(9) for j in range(13)]
    crops = [c for x in crops for c in (x, x.flip(1), x.flip(2), x.flip(1, 2))]
    assert any(torch.equal(p, c) for c in crops)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        PatchDataset(images, patch_size=25).patch(0)
    empty = images.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="no images"):
        PatchDataset(empty, patch_size=8)
    with pytest.raises(ValueError, match="not a directory"):
        PatchDataset(images / "nope", patch_size=8)


# ------------------------------------------------------------------ training options
def test_timestep_histogram_matches_the_mixture():
    dist = TimestepDistribution(low_fraction=0.75, low_max=250)
    p = dist.probabilities(1000)
    assert float(p.sum()) == pytest.approx(1.0)
    assert float(p[0]) == pytest.approx(0.75 / 250 + 0.25 / 1000)
    assert float(p[999]) == pytest.approx(0.25 / 1000)
    n = 400_000
    t = dist.sample(n, 1000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and int(t.min()) == 0 and int(t.max()) == 999
    counts = torch.bincount(t, minlength=1000).double()
    # ten bins of 100 timesteps: within 4 standard errors of the exact probabilities
    observed = counts.reshape(10, 100).sum(1) / n
    expected = p.reshape(10, 100).sum(1)
    assert torch.all((observed - expected).abs() < 4 * (expected * (1 - expected) / n).sqrt())
    assert float(counts[:250].sum() / n) == pytest.approx(0.75 + 0.25 * 0.25, abs=0.004)


def test_uniform_timesteps_draw_what_randint_draws():
    a = TimestepDistribution().sample(64, 1000, torch.Generator().manual_seed(3))
    b = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_training_option_errors():
    with pytest.raises(ValueError, match="low_fraction"):
        TimestepDistribution(low_fraction=1.0)
    with pytest.raises(ValueError, match="low_max"):
        TimestepDistribution(low_fraction=0.5, low_max=0)
    with pytest.raises(ValueError, match="low_max"):
        TimestepDistribution(0.5, 2000).probabilities(1000)
    with pytest.raises(ValueError, match="scale"):
        Augmentation(scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="saturation"):
        Augmentation(saturation=1.5)


def test_augmentation_is_deterministic_and_does_what_it_says(images):
    plain = PatchDataset(images, patch_size=16)
    default = PatchDataset(images, patch_size=16, augment=Augmentation())
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    # the default augmentation draws nothing extra: the same patches as before it existed
    assert torch.equal(plain.sample_batch(6, g()), default.sample_batch(6, g()))
    aug = Augmentation(rotate=True, scale=(0.5, 2.0), saturation=0.3, brightness=0.2)
    ds = PatchDataset(images, patch_size=16, augment=aug)
    a, b = ds.sample_batch(8, g()), ds.sample_batch(8, g())
    assert torch.equal(a, b) and a.shape == (8, 3, 16, 16)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, ds.sample_batch(8, torch.Generator().manual_seed(5)))
    # rotation only: every patch is a 90-degree rotation of the unaugmented patch
    rot = PatchDataset(images, patch_size=16, flip=False, augment=Augmentation(rotate=True))
    base = PatchDataset(images, patch_size=16, flip=False)
    index = base.files.index(images / "img0.png")
    for seed in range(6):
        r = rot.patch(index, torch.Generator().manual_seed(seed))
        x = base.patch(index, torch.Generator().manual_seed(seed))
        assert any(torch.equal(r, torch.rot90(x, k, (1, 2))) for k in range(4))
    # saturation -1 + eps is nearly grey; brightness scales values
    grey = PatchDataset(images, patch_size=16, augment=Augmentation(saturation=0.999999))
    patches = torch.stack([grey.patch(index, torch.Generator().manual_seed(s)) for s in range(20)])
    spread = (patches - patches.mean(1, keepdim=True)).abs().amax((1, 2, 3))
    assert float(spread.min()) < 0.05 < float(spread.max())


def test_cosine_learning_rate_by_hand():
    assert _learning_rate(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)  # warm-up
    assert _learning_rate(10, 100, 1.0, 10, "cosine") == pytest.approx(
        0.1 + 0.45 * (1 + np.cos(np.pi * 0.1)))
    assert _learning_rate(50, 100, 1.0, 0, "cosine") == pytest.approx(0.55)
    assert _learning_rate(100, 100, 1.0, 0, "cosine") == pytest.approx(0.1)
    assert _learning_rate(50, 100, 1.0, 10, "constant") == 1.0


def test_resume_with_training_options_is_bitwise(images, tmp_path):
    opts = dict(timesteps=TimestepDistribution(0.75, 250),
                augment=Augmentation(rotate=True, scale=(0.7, 1.4), saturation=0.2),
                lr_schedule="cosine")
    kw = dict(steps=8, batch_size=2, patch_size=16, lr=1e-3, warmup=2, seed=1,
              checkpoint_every=3, progress=False, **opts)
    full = train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "full", **kw)

    def crash(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "cut", callback=crash, **kw)
    resumed = train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "cut", **kw)
    assert resumed.loss_history == full.loss_history
    a = load_file(tmp_path / "full" / "training_state.safetensors")
    b = load_file(tmp_path / "cut" / "training_state.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the options are part of the saved arguments: resuming without them warns
    with pytest.warns(UserWarning, match="changed arguments"):
        train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "cut",
              **{**kw, "steps": 9, "timesteps": None, "augment": None,
                 "lr_schedule": "constant"})


# ------------------------------------------------------------------ training
@pytest.mark.slow
def test_training_lowers_the_loss(images):
    net = _net(dropout=0.0)
    out = train(net, Scheduler(), images, steps=150, batch_size=8, patch_size=16, lr=3e-3,
                warmup=10, seed=0, progress=False)
    losses = out.loss_history
    assert len(losses) == 150 and out.step == 150
    first, last = np.mean(losses[:20]), np.mean(losses[-40:])
    assert first > 0.5 and last < 0.5 * first, (first, last)
    # the EMA copy differs from the raw weights but has the same structure
    assert out.ema.config == net.config and not out.ema.training
    assert not torch.equal(out.ema.conv_out.weight, net.conv_out.weight)


def test_interrupted_and_resumed_run_is_bitwise_identical(images, tmp_path):
    kw = dict(steps=12, batch_size=4, patch_size=16, lr=1e-3, warmup=5, seed=3,
              checkpoint_every=4, progress=False)
    full = train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "full", **kw)

    def crash(step, loss):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_net(), Scheduler(), images, checkpoint_dir=tmp_path / "cut", callback=crash, **kw)
    assert load_file(tmp_path / "cut" / "training_state.safetensors")["loss_history"].numel() == 4
    # a fresh process would start from a fresh model: use different initial weights on purpose
    torch.manual_seed(123)
    other = UNet(**_net().config)
    resumed = train(other, Scheduler(), images, checkpoint_dir=tmp_path / "cut", **kw)
    assert resumed.loss_history == full.loss_history
    a = load_file(tmp_path / "full" / "training_state.safetensors")
    b = load_file(tmp_path / "cut" / "training_state.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    for name, tensor in other.state_dict().items():
        assert torch.equal(tensor, a[f"model.{name}"])
    # the sampling weights are the EMA and load() reads them
    model, sched = load(tmp_path / "cut")
    assert all(torch.equal(v, a[f"ema.{k}"]) for k, v in model.state_dict().items())
    lines = (tmp_path / "cut" / "loss_history.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and len(lines) == 13
    assert float(lines[-1].split(",")[1]) == pytest.approx(full.loss_history[-1], rel=1e-6)


def test_resume_checks_model_config(images, tmp_path):
    kw = dict(steps=2, batch_size=2, patch_size=16, progress=False, checkpoint_dir=tmp_path)
    train(_net(), Scheduler(), images, **kw)
    with pytest.raises(ValueError, match="model config"):
        train(UNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1), Scheduler(),
              images, **kw)
    with pytest.raises(ValueError, match="scheduler"):
        train(_net(), Scheduler(beta_schedule="cosine"), images, **kw)
    (tmp_path / "training_state.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        train(_net(), Scheduler(), images, **kw)


def test_train_accepts_a_plain_dataset():
    data = [torch.full((3, 8, 8), v) for v in (0.1, 0.5, 0.9)]
    out = train(_net(), Scheduler(prediction_type="v_prediction"), data, steps=3, batch_size=2,
                progress=False)
    assert len(out.loss_history) == 3 and all(np.isfinite(out.loss_history))


def test_amp_on_cpu_trains_in_bfloat16():
    data = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    out = train(_net(), Scheduler(), data, steps=2, batch_size=2, amp=True, device="cpu",
                progress=False)
    assert len(out.loss_history) == 2 and all(np.isfinite(out.loss_history))
    assert out.ema.conv_in.weight.dtype == torch.float32


def test_bad_training_arguments(images):
    with pytest.raises(ValueError, match="steps"):
        train(_net(), Scheduler(), images, steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train(_net(), Scheduler(), images, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        train(_net(), Scheduler(), images, steps=1, ema_decay=1.0)
    with pytest.raises(TypeError, match="scheduler"):
        train(_net(), "linear", images, steps=1)
    with pytest.raises(TypeError, match="UNet"):
        train(torch.nn.Conv2d(3, 3, 1), Scheduler(), images, steps=1, checkpoint_dir="x")


# ----------------------------------------------------------------------- CLI
def test_cli_train_and_resume(images, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(images), "--out", str(out), "--batch-size", "2", "--patch-size", "16",
            "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
            "--attention-resolutions", "2", "--checkpoint-every", "2", "--seed", "1",
            "--threads", "1", "--no-progress"]
    assert cli_main([*args, "--steps", "3"]) == 0
    model, sched = load(out)
    assert model.config["attention_resolutions"] == [2] and sched.prediction_type == "epsilon"
    # resume with no architecture flags: taken from the checkpoint
    assert cli_main(["train", str(images), "--out", str(out), "--steps", "5", "--batch-size", "2",
                     "--patch-size", "16", "--no-progress", "--threads", "1"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert len((out / "loss_history.csv").read_text().splitlines()) == 6
    assert cli_main([*args, "--steps", "6", "--base-channels", "16"]) == 2
    assert "differs from the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(images, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dipprior.cli", "train", str(images), "--out", str(out), "--steps", "4",
           "--batch-size", "2", "--patch-size", "16", "--base-channels", "8", "--channel-mults",
           "1,2", "--num-res-blocks", "1", "--checkpoint-every", "2", "--threads", "1",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_file(out / "training_state.safetensors")
    assert {"rng.rank0", "rng.rank1"} <= state.keys()
    assert not torch.equal(state["rng.rank0"], state["rng.rank1"])  # own seed per rank
    assert state["loss_history"].numel() == 4
    assert proc.stderr.count("step 4:") == 1  # only rank 0 reports
    load(out)
