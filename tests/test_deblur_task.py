"""Deblurring as a task: the classical peer, presets, the sampler, the CLI and the demo."""

import numpy as np
import pytest
import torch

from dipprior.cli import main
from dipprior.experiments.data import degrade
from dipprior.io import load_image, load_kernel, sample_image, save_image
from dipprior.metrics import psnr
from dipprior.operators import (
    CLASSICAL_T0,
    WIENER_BALANCE,
    Blur,
    Inpaint,
    classical_start,
    gaussian_kernel,
    make_task,
    motion_kernel,
    wiener,
)
from dipprior.pipeline import DIPInitializedSampler
from dipprior.pipeline.presets import budget_config, method_configs, recommended_config
from dipprior.pipeline.start import classical_t0
from dipprior.pipeline.tasks import DIP_BUDGET, default_dip_config


def test_make_task_gaussian_and_a_fresh_motion_kernel_per_seed():
    op = make_task("deblur")
    assert isinstance(op, Blur) and op.kernel.shape == (13, 13)
    assert abs(op.noise_sigma - 0.01) < 1e-12
    clean = sample_image("chelsea", 32)
    factory = make_task("deblur", blur="motion:9", blur_sigma=0)
    (a, ya), (b, yb), (c, _) = (degrade(clean, factory, s) for s in (3, 3, 4))
    assert torch.equal(a.kernel, b.kernel) and torch.equal(ya, yb)
    assert not torch.equal(a.kernel, c.kernel) and a.noise_sigma == 0
    with pytest.raises(ValueError, match="blur"):
        make_task("deblur", blur="disk:3")


def test_wiener_is_the_classical_peer_and_start():
    from skimage.restoration import wiener as skimage_wiener

    clean = sample_image("astronaut", 48)
    op = Blur(gaussian_kernel(7, 1.5), 0.01)
    y = op.degrade(clean, torch.Generator().manual_seed(0))
    restored = wiener(y, op)
    direct = skimage_wiener(y[1].double().numpy(), op.kernel.numpy(), WIENER_BALANCE,
                            clip=False)
    assert np.abs(restored[1].numpy() - direct).max() < 1e-5
    assert float(psnr(restored.clamp(0, 1), clean)) > float(psnr(y.clamp(0, 1), clean)) + 0.5
    assert torch.equal(classical_start(y, op), restored)
    with pytest.raises(TypeError, match="Blur"):
        wiener(y, Inpaint(torch.ones(48, 48)))


def test_presets_and_defaults_for_deblurring():
    op = Blur(gaussian_kernel(5, 1.0), 0.01)
    configs = method_configs("deblur")
    assert set(configs) == {"DDPM", "Observation->DDPM", "DIP->DDPM", "Classical->DDPM"}
    default = recommended_config(op)
    assert default.init == "classical" and default.samples == 4
    assert (default.lam, default.zeta) == (configs["Classical->DDPM"].lam,
                                           configs["Classical->DDPM"].zeta)
    fast = budget_config(op, "fast")
    assert fast.steps == 10 and (fast.lam, fast.zeta) == (default.lam, default.zeta)
    assert classical_t0(op) == CLASSICAL_T0["blur"]
    dip = default_dip_config(op)
    assert dip.iterations == DIP_BUDGET and dip.early_stopping in (None, "none")


def test_the_sampler_deblurs_with_the_default(model):
    from dipprior.diffusion import Scheduler

    scheduler = Scheduler()
    clean = sample_image("chelsea", 24)
    op = Blur(motion_kernel(7, 0.5, torch.Generator().manual_seed(1)), 0.01)
    y = op.degrade(clean, torch.Generator().manual_seed(0))
    r = DIPInitializedSampler(model, scheduler, budget="fast", progress=False)(y, op, seed=0)
    assert r.nfe == 10 and r.image.shape == clean.shape and r.t0 == CLASSICAL_T0["blur"]


def test_load_kernel(tmp_path):
    k = gaussian_kernel(5, 1.0).numpy()
    np.save(tmp_path / "k.npy", k)
    assert np.allclose(load_kernel(tmp_path / "k.npy").numpy(), k)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="kernel: cannot read"):
        load_kernel(tmp_path / "o.npy")
    np.save(tmp_path / "c.npy", np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="2D"):
        load_kernel(tmp_path / "c.npy")
    save_image(torch.from_numpy(k / k.max()).float().expand(3, 5, 5), tmp_path / "k.png")
    png = load_kernel(tmp_path / "k.png")
    assert png.shape == (5, 5) and np.allclose(png.numpy() / png.numpy().sum(), k, atol=2e-3)


def test_load_kernel_refuses_no_path_and_an_empty_file(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="kernel: expected a path to a .npy file or an image, "
                                        "got NoneType"):
        load_kernel(None)
    (tmp_path / "empty.npy").write_bytes(b"")  # was a raw EOFError
    with pytest.raises(ValueError, match="kernel: cannot read .*empty.npy.* as a .npy array"):
        load_kernel(tmp_path / "empty.npy")
    np.save(tmp_path / "k.npy", np.ones((3, 3)))

    def denied(*args, **kwargs):  # what a mode-000 file gives a user who is not root
        raise PermissionError(13, "Permission denied", str(tmp_path / "k.npy"))

    monkeypatch.setattr(np, "load", denied)
    with pytest.raises(PermissionError,
                       match=r"kernel: cannot read .*k.npy.* \(permission denied\)"):
        load_kernel(tmp_path / "k.npy")


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_cli_restore_deblur(tmp_path, capsys):
    save_image(sample_image("chelsea", 24), tmp_path / "c.png")
    base = ["restore", str(tmp_path / "c.png"), "--task", "deblur", "--budget", "fast"]
    assert main([*base, "--simulate", "--blur", "motion:7", "--out", str(tmp_path / "s.png")]) == 0
    assert "PSNR" in capsys.readouterr().out and load_image(tmp_path / "s.png").shape[-1] == 24
    np.save(tmp_path / "k.npy", gaussian_kernel(5, 1.0).numpy())
    assert main([*base, "--kernel", str(tmp_path / "k.npy"), "--out", str(tmp_path / "r.png")]) == 0
    assert "sigma estimated" in capsys.readouterr().out  # a real image: its noise estimated
    np.save(tmp_path / "even.npy", np.ones((4, 4)))
    err = _one_line_error(capsys, main([*base, "--kernel", str(tmp_path / "even.npy"),
                                        "--out", str(tmp_path / "x.png")]))
    assert "--kernel" in err and "odd" in err and not (tmp_path / "x.png").exists()
    err = _one_line_error(capsys, main([*base, "--blur", "motion:8", "--out",
                                        str(tmp_path / "x.png")]))
    assert "--blur" in err


@pytest.mark.parametrize("content, needle", [
    (None, "as a .npy array"),  # a 0-byte file: was a traceback (EOFError)
    ([[1.0, -0.999999, 0.0]], "sum to 1e-06 against a magnitude of 2"),  # was exit 0, 9 dB
    ([[0.1, 0.2, -0.3]], "clear non-zero value"),
])
def test_cli_refuses_an_empty_or_cancelling_kernel_file(tmp_path, capsys, content, needle):
    save_image(sample_image("chelsea", 24), tmp_path / "c.png")
    path = tmp_path / "k.npy"
    if content is None:
        path.write_bytes(b"")
    else:
        np.save(path, np.array(content))
    code = main(["restore", str(tmp_path / "c.png"), "--task", "deblur", "--kernel", str(path),
                 "--budget", "fast", "--out", str(tmp_path / "x.png")])
    err = _one_line_error(capsys, code)
    assert err.startswith("dipprior restore: error: --kernel: ") and needle in err
    assert not (tmp_path / "x.png").exists()


def test_demo_config_takes_deblur():
    from dipprior.demo import DemoConfig

    assert DemoConfig(tasks=("deblur",), blur="motion:15").blur == "motion:15"
    with pytest.raises(ValueError, match="blur"):
        DemoConfig(tasks=("deblur",), blur="gaussian:2", size=12)
    with pytest.raises(ValueError, match="blur"):
        DemoConfig(tasks=("deblur",), blur="motion:x")


def test_dip_fits_through_the_blur():
    from dipprior import dip
    from dipprior.dip import DIPConfig

    clean = sample_image("coffee", 32)
    op = Blur(gaussian_kernel(5, 1.0), 0.01)
    y = op.degrade(clean, torch.Generator().manual_seed(0))
    r = dip.fit(y, op, config=DIPConfig(iterations=60, channels=8, progress=False, seed=0))
    loss = r.history["loss"]
    assert r.image.shape == clean.shape and loss[-1] < 0.5 * loss[0]
