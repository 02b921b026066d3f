"""A user's own inputs: grey images, and the cases that used to pass silently (issue #23)."""

import pytest
import torch

from dipprior.estimators import estimate_noise_sigma
from dipprior.io import sample_image, save_image
from dipprior.pipeline import SamplerConfig


def _grey(size: int = 128) -> torch.Tensor:
    return sample_image("astronaut", size).mean(0, keepdim=True)


@pytest.mark.parametrize("sigma", [16, 25, 50])
def test_noise_of_a_grey_image_stored_as_rgb_is_estimated(sigma):
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(0))
    noisy = (_grey() + sigma / 255 * noise).expand(3, -1, -1)
    estimate = 255 * float(estimate_noise_sigma(noisy[None])[0])
    assert abs(estimate - sigma) <= 0.1 * sigma  # was 0.0: identical channels


def test_linearly_dependent_channels_never_read_as_noise_free():
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(1))
    g = _grey() + 20 / 255 * noise
    dependent = torch.cat([g, 0.5 * g + 0.2, 0.8 * g])
    assert 255 * float(estimate_noise_sigma(dependent[None])[0]) > 10
    clean_rgb = sample_image("astronaut", 64)  # independent colour channels: unchanged path
    assert 255 * float(estimate_noise_sigma(clean_rgb[None])[0]) < 5


def test_a_dip_image_on_the_wrong_scale_is_refused(model):
    from dipprior.diffusion import Scheduler
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    y = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    sampler = DIPInitializedSampler(
        model, Scheduler(), SamplerConfig(init="dip", steps=2), progress=False
    )
    with pytest.raises(ValueError, match="dip_image: values span.*0..255"):
        sampler(y, Denoise(0.1), dip_image=torch.rand(3, 16, 16) * 255)


def test_training_data_on_the_wrong_scale_is_refused(make_unet):
    from dipprior.diffusion import Scheduler, train

    with pytest.raises(ValueError, match="data: values span.*0..255"):
        train(make_unet(), Scheduler(), [torch.rand(3, 16, 16) * 255] * 4, steps=2,
              batch_size=2, progress=False)


def test_an_empty_image_is_not_written(tmp_path):
    for bits in (8, 16):
        with pytest.raises(ValueError, match="tensor: empty image"):
            save_image(torch.rand(3, 0, 8), tmp_path / "e.png", bits=bits)
    assert not (tmp_path / "e.png").exists()


def test_whitening_makes_grey_noise_white():
    from dipprior.operators import Denoise
    from dipprior.pipeline.grey import whiten_grey

    n = 0.1 * torch.randn(1, 256, 256, generator=torch.Generator().manual_seed(0))
    ys, ops, grey = whiten_grey([n.expand(3, -1, -1), torch.rand(3, 8, 8)],
                                [Denoise(0.1), Denoise(0.1)], [0, 1])
    assert grey == [True, False] and abs(ops[0].noise_sigma - 0.1 * 3**0.5) < 1e-9
    flat = ys[0].reshape(3, -1)
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov.diagonal(), torch.full((3,), 0.03), rtol=0.03)
    assert float(cov.fill_diagonal_(0).abs().max()) < 0.001  # channels uncorrelated
    assert torch.allclose(ys[0].mean(0), n[0], atol=1e-6)  # the grey image is unchanged


def test_a_noisy_grey_photo_is_denoised_and_stays_grey():
    from dipprior.diffusion import load_pretrained
    from dipprior.metrics import psnr
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    clean = _grey(64)
    y = (clean + 25 / 255 * torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(0)))
    r = DIPInitializedSampler(*load_pretrained(), progress=False)(y.expand(3, -1, -1),
                                                                    Denoise(25 / 255), seed=0)
    assert torch.equal(r.image[0], r.image[1]) and torch.equal(r.image[1], r.image[2])
    assert float(psnr(r.image.clamp(0, 1)[:1], clean)) > float(psnr(y.clamp(0, 1), clean)) + 5


@pytest.mark.parametrize("suffix, bits", [(".png", 8), (".png", 16), (".jpg", 8)])
def test_restore_writes_a_grey_photo_as_grey(tmp_path, suffix, bits):
    import imageio.v3 as iio

    from dipprior.cli import main

    path = tmp_path / f"grey{suffix}"
    save_image(_grey(48), path, bits=bits)
    out = tmp_path / "out.png"
    assert main(["restore", str(path), "--task", "denoise", "--simulate", "--sigma", "20",
                 "--out", str(out), "--no-progress"]) == 0
    assert iio.imread(out).shape == (48, 48)


def test_metrics_take_grey_images():
    from dipprior.metrics import evaluate

    a, b = _grey(32), _grey(32).flip(-1)
    grey, rgb = evaluate(a, b), evaluate(a.expand(3, -1, -1), b.expand(3, -1, -1))
    assert grey == rgb


# ------------------------------------------------------------- errors in the user's terms
def _cli_error(capsys, argv, code=2):
    from dipprior.cli import main

    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_tiny_images_are_refused_or_run():
    from dipprior.diffusion import Scheduler, UNet, sample

    net = UNet(base_channels=8).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 1, 1), 5).shape == (1, 3, 1, 1)  # was a GroupNorm error
        assert sample(net, Scheduler(), (1, 3, 1, 1), steps=2,
                      progress=False).shape == (1, 3, 1, 1)
    with pytest.raises(ValueError, match="shape: expected .* every size >= 1"):
        sample(net, Scheduler(), (1, 3, 0, 16), progress=False)


@pytest.mark.parametrize("shape", [(3, 0, 16), (1, 3, 16, 0)])
def test_an_empty_observation_is_refused_by_the_sampler(model, shape):
    from dipprior.diffusion import Scheduler
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    sampler = DIPInitializedSampler(model, Scheduler(), init="observation", steps=1,
                                    progress=False)
    with pytest.raises(ValueError, match=r"observation: empty image of shape .* H, W >= 1"):
        sampler(torch.rand(shape), Denoise(0.1))  # was min() of an empty tensor


def test_restore_of_a_one_pixel_image(tmp_path, capsys):
    save_image(torch.rand(3, 1, 1), tmp_path / "p.png")
    err = _cli_error(capsys, ["restore", str(tmp_path / "p.png"), "--task", "denoise",
                              "--out", str(tmp_path / "o.png")])
    assert "1x1 pixels is too small" in err and "8x8" in err


def test_operator_arguments_in_the_users_terms():
    import numpy as np

    from dipprior.operators import Denoise, Inpaint

    assert Denoise(np.float32(0.1)).noise_sigma == pytest.approx(0.1)
    assert Denoise(torch.tensor(0.1)).noise_sigma == pytest.approx(0.1)
    with pytest.raises(TypeError, match="mask_from_image"):
        Inpaint("mask.png")
    from dipprior.io import load_image

    with pytest.raises(TypeError, match="path: expected a file path, got NoneType"):
        load_image(None)


def test_bad_types_in_a_checkpoint_config_name_the_file(tmp_path):
    import json

    from dipprior.diffusion import Scheduler, UNet, load, save

    save(UNet(base_channels=8), Scheduler(), tmp_path / "ck")
    config_file = tmp_path / "ck" / "config.json"
    config = json.loads(config_file.read_text())
    for key, value in (("format_version", "1"), ("scheduler", {**config["scheduler"],
                                                                "beta_start": None})):
        config_file.write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=str(config_file)):
            load(tmp_path / "ck")


@pytest.mark.parametrize("sigma", ["300", "-5"])
def test_sigma_is_echoed_in_the_users_units(tmp_path, capsys, sigma):
    save_image(torch.rand(3, 16, 16), tmp_path / "p.png")
    err = _cli_error(capsys, ["restore", str(tmp_path / "p.png"), "--task", "denoise",
                              "--sigma", sigma, "--simulate", "--out", str(tmp_path / "o.png")])
    assert "--sigma: expected a noise std in 0..255" in err and f"got {sigma}" in err


def test_compare_and_demo_check_their_outputs_before_running(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    folder = tmp_path / "photos"
    folder.mkdir()
    save_image(torch.rand(3, 16, 16), folder / "a.png")
    base = ["compare", str(folder), "--task", "denoise", "--n-images", "1"]
    assert "--out" in _cli_error(capsys, [*base, "--out", str(tmp_path / "file" / "x")])
    assert "--dip-cache" in _cli_error(capsys, [*base, "--dip-cache", str(tmp_path / "file")])
    assert "--size: expected at least 11" in _cli_error(capsys, [*base, "--size", "8"])
    assert "--out" in _cli_error(capsys, ["demo", "--quick", "--out",
                                          str(tmp_path / "file" / "d")])


def test_an_unavailable_device_is_named():
    from dipprior import dip
    from dipprior.dip import DIPConfig
    from dipprior.operators import Denoise

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="'mps' asked for, but MPS"):
        dip.fit(torch.rand(3, 16, 16), Denoise(0.1), config=DIPConfig(iterations=1),
                device="mps")


# --------------------------------------------------------------------------- large photos
def test_tiles_cover_the_image_and_their_weights_blend():
    from dipprior.pipeline.tiles import tile_starts, tile_weight

    assert tile_starts(100, 100, 8) == [0] and tile_starts(50, 100, 8) == [0]
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:], strict=False))
    w = tile_weight(64, 64, 16, True, False, False, True)
    assert float(w.min()) > 0 and float(w[-1, 0]) == 1.0 and float(w[0, 0]) < 0.1


def _prior_and_noisy(size, seed=0):
    from dipprior.diffusion import load_pretrained
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    clean = sample_image("coffee", size)
    op = Denoise(25 / 255)
    y = op.degrade(clean, torch.Generator().manual_seed(seed))
    return DIPInitializedSampler(*load_pretrained(), progress=False), clean, op, y


def test_tiling_a_small_image_equals_the_untiled_result_within_tolerance():
    from dipprior.metrics import psnr
    from dipprior.pipeline.tiles import restore_tiled

    sampler, clean, op, y = _prior_and_noisy(96)
    whole = sampler(y, op, seed=0).image
    tiled = restore_tiled(sampler, y, op, 0, tile=48, overlap=8, progress=False)
    assert torch.equal(restore_tiled(sampler, y, op, 0, tile=96, progress=False), whole)
    # stated tolerance: within 0.1 dB of the untiled PSNR, 0.01 mean absolute difference
    assert abs(float(psnr(tiled.clamp(0, 1), clean)) - float(psnr(whole.clamp(0, 1), clean))) < 0.1
    assert float((tiled - whole).abs().mean()) < 0.01


def test_tiles_leave_no_step_at_their_borders():
    from dipprior.operators import Denoise
    from dipprior.pipeline.tiles import restore_tiled, tile_starts

    sampler, *_ = _prior_and_noisy(16)
    ramp = torch.linspace(0.2, 0.8, 96)
    smooth = (ramp[None, :, None] * 0.5 + ramp[None, None, :] * 0.5).expand(3, 96, 96)
    op = Denoise(10 / 255)
    y = op.degrade(smooth.contiguous(), torch.Generator().manual_seed(1))
    out = restore_tiled(sampler, y, op, 0, tile=40, overlap=8, progress=False)
    steps = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1))  # per column border
    borders = [s + 40 - 1 for s in tile_starts(96, 40, 8)[:-1]]
    inside = torch.ones_like(steps, dtype=torch.bool)
    inside[borders] = False
    assert float(steps[borders].max()) < 2 * float(steps[inside].median()) + 1e-3


def test_restore_plans_tiles_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from dipprior.cli import main

    save_image(sample_image("chelsea", 64), tmp_path / "c.png")
    base = ["restore", str(tmp_path / "c.png"), "--simulate", "--no-progress",
            "--out", str(tmp_path / "o.png")]
    assert main([*base, "--task", "denoise", "--tile", "32", "--overlap", "8"]) == 0
    out = capsys.readouterr().out
    assert "in 9 tiles of 32" in out and "expect about" in out and "PSNR" in out
    assert "--tile: expected auto" in _cli_error(capsys, [*base, "--task", "denoise",
                                                          "--tile", "big"])
    err = _cli_error(capsys, [*base, "--task", "inpaint", "--time-limit", "0.001"])
    assert "over --time-limit" in err and "--budget fast" in err
    err = _cli_error(capsys, [*base, "--task", "deblur", "--tile", "32", "--overlap", "8"])
    assert "--task deblur: Blur couples pixels across tile borders" in err
    assert "--overlap: expected 0 to 15" in _cli_error(capsys, [*base, "--task", "denoise",
                                                               "--tile", "32"])


@pytest.mark.parametrize("limit", ["nan", "inf", "0", "-5"])
def test_restore_refuses_a_time_limit_that_is_no_limit(tmp_path, capsys, limit):
    """--time-limit nan switched the limit off (a 1,011,489 s forecast started; #30)."""
    save_image(sample_image("chelsea", 16), tmp_path / "c.png")
    err = _cli_error(capsys, ["restore", str(tmp_path / "c.png"), "--task", "denoise",
                              "--time-limit", limit, "--out", str(tmp_path / "o.png")])
    assert f"--time-limit: expected seconds > 0 (a finite number), got {limit}" in err
    assert not (tmp_path / "o.png").exists()


def test_restore_names_samples_that_do_not_fit_in_memory(tmp_path, capsys):
    """It advised a smaller --tile for --samples 1000000000 (#30)."""
    save_image(sample_image("chelsea", 16), tmp_path / "c.png")
    err = _cli_error(capsys, ["restore", str(tmp_path / "c.png"), "--task", "denoise",
                              "--samples", "1000000000", "--out", str(tmp_path / "o.png")])
    assert err.startswith("dipprior restore: error: --samples: 1000000000 chains per image")
    assert "use --samples" in err and "--tile" not in err


def test_the_sampler_refuses_chains_that_cannot_fit_before_any_work(model, monkeypatch):
    """samples=10**9 made the machine's kernel kill the process (#30); here a machine of 1 GiB,
    so that the code before the fix runs its 2000 tiny chains instead of exhausting memory."""
    from dipprior.diffusion import Scheduler
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler, checks

    calls = []

    def counting(x, t):
        calls.append(x.shape)
        return model(x, t)

    monkeypatch.setattr(checks, "device_memory", lambda device: 2.0**30)
    sampler = DIPInitializedSampler(counting, Scheduler(), init="observation", steps=1,
                                    samples=2000, progress=False)
    with pytest.raises(ValueError, match=r"samples: 2000 chains for each of 1 image\(s\) of 256 "
                                         r"pixels need at least 2.0 GiB .* use samples <= 1024"):
        sampler(torch.rand(3, 16, 16), Denoise(0.1))
    assert not calls
    DIPInitializedSampler(counting, Scheduler(), init="observation", steps=1, samples=2,
                          progress=False)(torch.rand(3, 16, 16), Denoise(0.1))
    assert calls[0][0] == 2


def test_a_folder_tiles_its_large_photos(tmp_path):
    from dipprior.cli import main
    from dipprior.io import load_image

    folder = tmp_path / "photos"
    folder.mkdir()
    save_image(sample_image("chelsea", 64), folder / "big.png")
    save_image(sample_image("coffee", 24), folder / "small.png")
    assert main(["restore", str(folder), "--task", "denoise", "--simulate", "--tile", "32",
                 "--overlap", "8", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    assert load_image(tmp_path / "out" / "big.png").shape == (3, 64, 64)
    assert "big.png" in (tmp_path / "out" / "metrics.csv").read_text()


def test_tiles_of_an_identity_restore_give_the_image_back_and_holes_are_checked_first():
    from dipprior.operators import Denoise, Inpaint
    from dipprior.pipeline.tiles import restore_tiled

    y = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0))
    calls = []

    def identity(tile, op, seed):
        calls.append(seed)
        return tile

    for overlap in (0, 5, 15, 15):
        calls.clear()
        out = restore_tiled(identity, y, Denoise(0.1), 3, tile=32, overlap=overlap,
                            progress=False)
        assert torch.allclose(out, y, atol=1e-6)
    assert len(set(calls)) == len(calls) > 4  # every tile its own seed
    again = list(calls)
    restore_tiled(identity, y, Denoise(0.1), 3, tile=32, overlap=15, progress=False)
    assert calls[-len(again):] == again  # the same seeds each run
    mask = torch.ones(70, 90)
    mask[:40, :40] = 0  # a hole larger than a 32-pixel tile
    calls.clear()
    with pytest.raises(ValueError, match="no known pixel"):
        restore_tiled(identity, y, Inpaint(mask), 0, tile=32, overlap=4, progress=False)
    assert calls == []  # refused before any tile ran
