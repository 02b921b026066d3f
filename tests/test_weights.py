"""The shipped prior (dipprior/weights), its export and the one-step denoiser evaluation."""

import fnmatch
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch

from conftest import tiny_unet
from dipprior import _prior_export as prior_export
from dipprior import pretrained
from dipprior.diffusion import Scheduler, UNet, available_pretrained, load_pretrained, save, train
from dipprior.diffusion.checkpoint import DEFAULT_PRETRAINED
from dipprior.metrics import psnr
from dipprior.operators import Denoise

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- shipped weights


def _shipped() -> Path:
    return Path(str(resources.files("dipprior") / "weights" / DEFAULT_PRETRAINED))


def test_default_prior_is_shipped_and_loads_at_an_odd_size():
    assert DEFAULT_PRETRAINED == pretrained.DEFAULT_NAME == "cbsd432-small"
    assert DEFAULT_PRETRAINED in available_pretrained()
    model, scheduler = load_pretrained(device="cpu")  # name=None -> the default
    assert isinstance(model, UNet) and isinstance(scheduler, Scheduler) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 37, 29, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x, torch.tensor([500]))
    assert out.shape == (1, 3, 37, 29) and bool(torch.isfinite(out).all())
    assert float(out.std()) > 0.05  # not a constant: trained weights


def test_shipped_files_float16_size_and_card():
    folder = _shipped()
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "MODEL_CARD.md"} <= files
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 30 * 2**20
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"F16"}
    config = json.loads((folder / "config.json").read_text())
    info = config["pretrained"]
    assert info["name"] == DEFAULT_PRETRAINED and info["weights_dtype"] == "float16"
    step = config["step"]
    assert isinstance(step, int) and step > 0 and info["training"]["step"] == step
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"Steps: {step}," in card and "CBSD432" in card
    cbsd = info["evaluation"]["CBSD68"]
    assert cbsd["images"] == 68 and cbsd["crop"] == 128 and cbsd["t"] == 56
    assert f"| CBSD68 | 68 | 128 | 25/255 | 0 | 56 | {cbsd['psnr']:.2f} |" in card
    assert cbsd["psnr"] > cbsd["noisy_psnr"]  # it does denoise


def _package_data_globs() -> list[str]:
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    match = re.search(r"dipprior\s*=\s*\[(.*?)\]", section, re.S)
    assert match, "no package-data for dipprior in pyproject.toml"
    return re.findall(r'"([^"]+)"', match.group(1))


def test_wheel_package_data_includes_the_weights():
    globs = _package_data_globs()
    # every file of every shipped prior in the source tree is matched, so a wheel carries it
    source = REPO / "src" / "dipprior" / "weights"
    shipped = [p for p in source.glob("*/*") if p.is_file() and not p.name.startswith(".")]
    assert any(p.name == "model.safetensors" for p in shipped)
    for path in shipped:
        relative = path.relative_to(REPO / "src" / "dipprior").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} not in {globs}"
    # and the installed package (editable or from a wheel) holds them
    installed = Path(str(resources.files("dipprior") / "weights"))
    for path in shipped:
        assert (installed / path.parent.name / path.name).is_file()


# ----------------------------------------------------------------------------- denoiser


def test_denoise_timestep_is_the_closest_noise_level():
    s = Scheduler()
    for sigma in (5 / 255, 15 / 255, 25 / 255, 50 / 255):
        best = min(range(1000), key=lambda t: abs(s.noise_level(t) - 2 * sigma))
        assert pretrained.denoise_timestep(s, sigma) == best
    assert pretrained.denoise_timestep(s, 25 / 255) == 56
    with pytest.raises(ValueError, match="sigma"):
        pretrained.denoise_timestep(s, 0.0)


def test_one_step_denoise_maps_the_observation_onto_the_forward_process():
    """An oracle model that knows x and n: it checks its input and returns the true noise."""
    s, sigma = Scheduler(), 25 / 255
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 9, 11, generator=g)
    n = torch.randn(x.shape, generator=g)
    y = x + sigma * n
    t_star = 56
    abar = float(s.alphas_cumprod[t_star])
    seen = {}

    def oracle(x_t, t):
        seen["t"] = t.tolist()
        # x_t = sqrt(abar) (x0 + 2 sigma n) with x0 = 2x - 1, by hand
        torch.testing.assert_close(x_t, abar ** 0.5 * ((2 * x - 1) + 2 * sigma * n))
        return (x_t - abar ** 0.5 * (2 * x - 1)) / (1 - abar) ** 0.5  # the exact epsilon

    out = pretrained.one_step_denoise(oracle, s, y, sigma)
    assert seen["t"] == [t_star, t_star]
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    # a model predicting no noise returns the observation itself (clamped)
    single = pretrained.one_step_denoise(lambda a, b: torch.zeros_like(a), s, y[0], sigma)
    torch.testing.assert_close(single, y[0].clamp(0, 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="noisy"):
        pretrained.one_step_denoise(oracle, s, torch.rand(4, 8, 8), sigma)


def test_evaluate_denoiser_uses_the_compare_noise_draws():
    s, sigma = Scheduler(), 25 / 255
    g = torch.Generator().manual_seed(2)
    images = {"a": torch.rand(3, 12, 12, generator=g), "b": torch.rand(3, 12, 12, generator=g),
              "c": torch.rand(3, 11, 13, generator=g)}  # two sizes: two batches
    table = pretrained.evaluate_denoiser(lambda x, t: torch.zeros_like(x), s, images,
                                         sigma=sigma, seed=5, batch_size=1, cbm3d=False,
                                         progress=False)
    assert [r["Image"] for r in table.rows] == ["a", "b", "c", "Average"]
    assert "CBM3D PSNR" not in table.columns
    for i, clean in enumerate(images.values()):
        noisy = Denoise(sigma).degrade(clean, torch.Generator().manual_seed(5 + i))
        row = table.rows[i]
        assert row["PSNR"] == pytest.approx(float(psnr(noisy, clean)), abs=1e-4)
        assert row["Noisy PSNR"] == pytest.approx(row["PSNR"], abs=1e-4)
        assert row["t"] == 56
    avg = table.rows[-1]["PSNR"]
    assert avg == pytest.approx(sum(r["PSNR"] for r in table.rows[:3]) / 3)


def test_evaluate_denoiser_scores_cbm3d_on_the_same_noisy_images(monkeypatch):
    """The CBM3D columns score the reference denoiser on exactly the prior's noisy inputs."""
    from dipprior import denoisers

    seen = []

    def fake_cbm3d(noisy, sigma):  # stands in for bm3d: returns its input (the noisy image)
        seen.append((noisy.clone(), sigma))
        return noisy.clamp(0, 1)

    monkeypatch.setattr(denoisers, "cbm3d", fake_cbm3d)
    g = torch.Generator().manual_seed(0)
    images = {"a": torch.rand(3, 12, 12, generator=g), "b": torch.rand(3, 12, 12, generator=g)}
    table = pretrained.evaluate_denoiser(lambda x, t: torch.zeros_like(x), Scheduler(), images,
                                         sigma=0.1, seed=3, cbm3d=True, progress=False)
    for i, clean in enumerate(images.values()):
        noisy = Denoise(0.1).degrade(clean, torch.Generator().manual_seed(3 + i))
        assert torch.equal(seen[i][0], noisy) and seen[i][1] == 0.1
        row = table.rows[i]
        assert row["CBM3D PSNR"] == pytest.approx(float(psnr(noisy.clamp(0, 1), clean)))
    assert "CBM3D SSIM" in table.columns


# ----------------------------------------------------------------------------- export


def _tiny_checkpoint(directory: Path) -> UNet:
    """Two real training steps of a tiny UNet, checkpointed (config, weights, state, losses)."""
    net = tiny_unet()
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 16, 16))

    class Patches(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i][0]

    out = train(net, Scheduler(), Patches(), steps=2, batch_size=2, warmup=1,
                checkpoint_dir=directory, checkpoint_every=1, progress=False, device="cpu")
    return out.ema


def test_export_roundtrip_card_and_atomic_replace(tmp_path, monkeypatch):
    ema = _tiny_checkpoint(tmp_path / "run")
    root = tmp_path / "weights"
    evaluation = {"CBSD68": {"images": 68, "crop": 128, "sigma_255": 25.0, "seed": 0, "t": 56,
                             "psnr": 27.5, "ssim": 0.8, "noisy_psnr": 20.5,
                             "cbm3d_psnr": 27.0, "cbm3d_ssim": 0.79,
                             "adapted": {"images": 24, "psnr": 28.0, "ssim": 0.81,
                                         "seconds": 12.5, "onestep_psnr": 27.75,
                                         "default_psnr": 27.8, "cbm3d_psnr": 27.25}}}
    curve = [{"step": 1, "psnr": 21.0, "ssim": 0.5}, {"step": 2, "psnr": 27.5, "ssim": 0.8}]
    target = prior_export.export_pretrained(tmp_path / "run", "tiny", root=root,
                                          training={"data": "four random images",
                                                    "patch_size": 16, "compute": "a test"},
                                          evaluation=evaluation, curve=curve)
    assert target == root / "tiny"
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]  # no temporary folders left
    assert {"model.safetensors", "config.json", "MODEL_CARD.md"} <= {
        p.name for p in target.iterdir()}
    model, _ = load_pretrained("tiny", root=root, device="cpu")
    reference = pretrained.fp16_roundtrip(ema).eval()
    x = torch.randn(1, 3, 13, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor([3])), reference(x, torch.tensor([3])),
                                   atol=0, rtol=0)
    card = (target / "MODEL_CARD.md").read_text()
    assert "Steps: 2, batch size 2 x 1 process(es)" in card
    assert "four random images" in card and "a test" in card and "16x16 crops" in card
    assert "| CBSD68 | 68 | 128 | 25/255 | 0 | 56 | 27.50 | 0.8000 | 20.50 | 27.00 | +0.50 |" \
        in card
    # the adapted one step, with the one step and CBM3D on the same 24 crops
    assert "| CBSD68 | 24 | 27.75 | 27.80 | 28.00 | 27.25 | +0.75 | +0.20 | 12.5 |" in card
    assert "| 1 | 21.00 | 0.5000 |" in card and "| 2 | 27.50 | 0.8000 |" in card
    assert "| 2 |" in card.split("### Training loss")[1]  # the loss table reaches step 2
    config = json.loads((target / "config.json").read_text())
    assert config["step"] == 2 and config["pretrained"]["evaluation"] == evaluation

    # a failing re-export (over the size limit) leaves the earlier export in place
    before = (target / "MODEL_CARD.md").read_text()
    monkeypatch.setattr(prior_export, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="limit"):
        prior_export.export_pretrained(tmp_path / "run", "tiny", root=root)
    assert (target / "MODEL_CARD.md").read_text() == before
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]
    monkeypatch.undo()
    prior_export.export_pretrained(tmp_path / "run", "tiny", root=root, plot=False)
    assert "(not evaluated at export)" in (target / "MODEL_CARD.md").read_text()
    assert not (target / "loss_curve.png").exists()
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]


def test_export_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="name"):
        prior_export.export_pretrained(tmp_path, "../escape", root=tmp_path / "w")
    with pytest.raises(ValueError, match="does not exist"):
        prior_export.export_pretrained(tmp_path / "missing", "x", root=tmp_path / "w")
    save(UNet(base_channels=8, channel_mults=(1,), num_res_blocks=1), Scheduler(),
         tmp_path / "bare")
    # a bare save (no training state, no loss history) still exports
    target = prior_export.export_pretrained(tmp_path / "bare", "bare", root=tmp_path / "w")
    assert "(no loss history in the checkpoint)" in (target / "MODEL_CARD.md").read_text()
