"""Other priors: diffusers folders through load_pretrained, and Gaussian denoisers as priors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from dipprior._tensor import model_device, model_dtype
from dipprior.diffusion import (
    DenoiserPrior,
    DiffusersUNet,
    Scheduler,
    UNet,
    available_pretrained,
    load_pretrained,
    save,
    scheduler_from_diffusers,
)
from dipprior.diffusion.sampling import model_output
from dipprior.pipeline import SamplerConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _diffusers():
    return pytest.importorskip("diffusers")


def _tiny_unet(**overrides):
    """A tiny random UNet2DModel with one attention level (so the attention weights load too)."""
    diffusers = _diffusers()
    torch.manual_seed(0)
    config = dict(sample_size=16, block_out_channels=(8, 16), norm_num_groups=8,
                  layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
    config.update(overrides)
    return diffusers.UNet2DModel(**config).eval()


def _pipeline_folder(root, unet=None, **scheduler_kwargs):
    """root/unet (save_pretrained), root/scheduler (DDPMScheduler config), root/model_index.json."""
    diffusers = _diffusers()
    unet = _tiny_unet() if unet is None else unet
    unet.save_pretrained(root / "unet")
    diffusers.DDPMScheduler(**scheduler_kwargs).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}))
    return unet


def _edit_scheduler_config(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# ----------------------------------------------------------------------------- diffusers folders
def test_pipeline_folder_matches_diffusers_unet(tmp_path):
    unet = _pipeline_folder(tmp_path)
    model, scheduler = load_pretrained(str(tmp_path), device="cpu")
    assert isinstance(model, DiffusersUNet) and isinstance(scheduler, Scheduler)
    assert not model.training
    assert model_dtype(model) == torch.float32 and model_device(model) == torch.device("cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        ours = model(x, t)
        ref = unet(x, t).sample
        assert isinstance(ours, torch.Tensor)
        assert (ours - ref).abs().max() < 1e-5
        assert ref.abs().max() > 1e-3  # a random UNet's outputs are not all zero
        # an int timestep, and a size that is not a multiple of the down-sampling factor
        assert (model(x, 5) - unet(x, 5).sample).abs().max() < 1e-5
        assert model(torch.randn(1, 3, 15, 13), 5).shape == (1, 3, 15, 13)
        # what the sampler sees: a float32 tensor, also for a bfloat16 copy of the model
        at_417 = unet(x, torch.full((3,), 417)).sample
        out = model_output(model, x, 417)
        assert out.dtype == torch.float32 and (out - at_417).abs().max() < 1e-5
        half = model_output(_load_copy(tmp_path).to(torch.bfloat16), x, 417)
        assert half.dtype == torch.float32 and (half - at_417).abs().max() < 0.1


def _load_copy(root):
    return load_pretrained(root, device="cpu")[0]


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2", "scaled_linear"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_mapped_scheduler_matches_diffusers(tmp_path, beta_schedule, prediction_type):
    diffusers = _diffusers()
    kwargs = dict(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03,
                  beta_schedule=beta_schedule, prediction_type=prediction_type,
                  clip_sample=False, clip_sample_range=2.0)
    _pipeline_folder(tmp_path, **kwargs)
    _, scheduler = load_pretrained(tmp_path, device="cpu")
    ref = diffusers.DDPMScheduler(**kwargs)
    assert scheduler.num_train_timesteps == 500
    assert scheduler.prediction_type == prediction_type and scheduler.clip_sample is False
    assert scheduler.clip_sample_range == 2.0
    assert (scheduler.alphas_cumprod - ref.alphas_cumprod.double()).abs().max() < 1e-6
    # a DDIM config maps the same way
    ddim = scheduler_from_diffusers(dict(diffusers.DDIMScheduler(**kwargs).config))
    assert (ddim.alphas_cumprod - ref.alphas_cumprod.double()).abs().max() < 1e-6


def test_inference_only_keys_are_ignored():
    base = scheduler_from_diffusers({"beta_schedule": "linear"})
    other = scheduler_from_diffusers({"beta_schedule": "linear", "timestep_spacing": "trailing",
                                      "steps_offset": 1, "set_alpha_to_one": False,
                                      "variance_type": "fixed_small_log",
                                      "_class_name": "DDIMScheduler"})
    assert torch.equal(base.alphas_cumprod, other.alphas_cumprod)
    # diffusers' defaults are dipprior's: an empty config is the DDPM schedule
    assert scheduler_from_diffusers({}).to_config() == Scheduler().to_config()


@pytest.mark.parametrize("key, value", [
    ("variance_type", "learned_range"),
    ("variance_type", "fixed_large"),
    ("thresholding", True),
    ("trained_betas", [0.1, 0.2]),
    ("rescale_betas_zero_snr", True),
    ("some_new_option", 1),
    ("_class_name", "PNDMScheduler"),
])
def test_unsupported_scheduler_settings_raise_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        scheduler_from_diffusers({"beta_schedule": "linear", key: value})


@pytest.mark.parametrize("key, value", [("variance_type", "learned_range"),
                                        ("thresholding", True)])
def test_folder_with_unsupported_scheduler_raises(tmp_path, key, value):
    _pipeline_folder(tmp_path)
    _edit_scheduler_config(tmp_path / "scheduler" / "scheduler_config.json", **{key: value})
    with pytest.raises(ValueError, match=f"{key}.*{value}"):
        load_pretrained(str(tmp_path), device="cpu")


def test_bare_unet_folder(tmp_path):
    unet = _pipeline_folder(tmp_path)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    # <pipeline>/unet: the scheduler config comes from the sibling <pipeline>/scheduler
    model, scheduler = load_pretrained(tmp_path / "unet", device="cpu")
    with torch.no_grad():
        assert (model(x, t) - unet(x, t).sample).abs().max() < 1e-5
    # a flat folder: config.json, weights and scheduler_config.json side by side
    flat = tmp_path / "flat"
    unet.save_pretrained(flat)
    (flat / "scheduler_config.json").write_text(
        (tmp_path / "scheduler" / "scheduler_config.json").read_text())
    model, _ = load_pretrained(str(flat), device="cpu")
    with torch.no_grad():
        assert (model(x, t) - unet(x, t).sample).abs().max() < 1e-5
    # no scheduler config anywhere: an explicit error, never a default schedule
    alone = tmp_path / "elsewhere" / "model"
    unet.save_pretrained(alone)
    with pytest.raises(ValueError, match="scheduler_config.json"):
        load_pretrained(alone, device="cpu")


def test_legacy_attention_weight_names_load(tmp_path):
    """Checkpoints from diffusers < 0.14 (e.g. google/ddpm-*) name attention weights
    query/key/value/proj_attn."""
    unet = _pipeline_folder(tmp_path)
    path = tmp_path / "unet" / WEIGHTS
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    tensors = {}
    for name, value in load_file(path).items():
        for new, legacy in old.items():
            name = name.replace(f".{new}.", f".{legacy}.")
        tensors[name] = value
    assert any(".query." in k for k in tensors)
    save_file(tensors, path)
    model, _ = load_pretrained(tmp_path, device="cpu")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    with torch.no_grad():
        assert (model(x, t) - unet(x, t).sample).abs().max() < 1e-5


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path, monkeypatch):
    _pipeline_folder(tmp_path)
    (tmp_path / "unet" / WEIGHTS).unlink()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.bin.*pickle"):
        load_pretrained(str(tmp_path), device="cpu")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match="no diffusion_pytorch_model.safetensors"):
        load_pretrained(str(tmp_path), device="cpu")


def test_corrupt_weights_raise(tmp_path):
    _pipeline_folder(tmp_path)
    path = tmp_path / "unet" / WEIGHTS
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_pretrained(tmp_path, device="cpu")


def test_unsupported_models_are_refused(tmp_path):
    # learned variance: twice the channels out
    _pipeline_folder(tmp_path / "a", unet=_tiny_unet(out_channels=6))
    with pytest.raises(ValueError, match="out_channels=6"):
        load_pretrained(tmp_path / "a", device="cpu")
    # a latent pipeline: the UNet works on latents, not pixels
    _pipeline_folder(tmp_path / "b")
    index = json.loads((tmp_path / "b" / "model_index.json").read_text())
    index["vqvae"] = ["diffusers", "VQModel"]
    (tmp_path / "b" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="vqvae"):
        load_pretrained(tmp_path / "b", device="cpu")
    # a class-conditional UNet
    _pipeline_folder(tmp_path / "c", unet=_tiny_unet(num_class_embeds=4))
    with pytest.raises(ValueError, match="num_class_embeds"):
        load_pretrained(tmp_path / "c", device="cpu")
    # a folder that is neither kind
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="neither a dipprior checkpoint.*nor a diffusers folder"):
        load_pretrained(tmp_path / "d", device="cpu")


def test_unknown_name_lists_shipped_priors():
    with pytest.raises(ValueError, match="available") as info:
        load_pretrained("no-such-prior-or-folder")
    for name in available_pretrained():
        assert name in str(info.value)


def test_dipprior_checkpoint_folder(tmp_path, make_unet, monkeypatch):
    save(make_unet(), Scheduler(beta_schedule="cosine"), tmp_path / "ck")
    model, scheduler = load_pretrained(str(tmp_path / "ck"), device="cpu")
    assert isinstance(model, UNet) and scheduler.beta_schedule == "cosine"
    # names still come first: a registry prior "ck" wins over the folder ./ck for the string
    root = tmp_path / "weights"
    save(make_unet(), Scheduler(), root / "ck")
    monkeypatch.chdir(tmp_path)
    _, scheduler = load_pretrained("ck", root=root, device="cpu")
    assert scheduler.beta_schedule == "linear"
    _, scheduler = load_pretrained("./ck", root=root, device="cpu")
    assert scheduler.beta_schedule == "cosine"
    with pytest.raises(ValueError, match=r"unknown pretrained prior 'big'.*available.*ck"):
        load_pretrained("big", root=root)


def test_diffusers_folder_without_diffusers_says_pip_install(tmp_path, monkeypatch):
    _pipeline_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(ImportError, match=r"pip install dipprior\[diffusers\]"):
        load_pretrained(tmp_path, device="cpu")


def test_loaded_pair_runs_in_the_sampler(tmp_path):
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    _pipeline_folder(tmp_path)
    model, scheduler = load_pretrained(str(tmp_path), device="cpu")
    op = Denoise(25 / 255)
    g = torch.Generator().manual_seed(0)
    y = op.degrade(torch.rand(3, 16, 16, generator=g), g)
    result = DIPInitializedSampler(model, scheduler, SamplerConfig(init="observation", steps=2),
                                   progress=False)(y, op, seed=0)
    assert result.image.shape == (3, 16, 16) and result.nfe == 2
    assert torch.isfinite(result.image).all()


# -------------------------------------------------------------------------- DenoiserPrior
MU, S0 = 0.4, 0.2  # per-pixel Gaussian image model on [0, 1]


class GaussianPosteriorMean(torch.nn.Module):
    """E[x | x + sigma n] for x ~ N(MU, S0^2) per pixel, recording the sigmas it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # 1: only so that it has a parameter
        self.sigmas: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.sigmas.append(sigma)
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        return self.scale * (MU + S0**2 / (S0**2 + s**2) * (x - MU))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_denoiser_prior_x0_is_the_posterior_mean(prediction_type, dtype):
    s = Scheduler(prediction_type=prediction_type)
    denoiser = GaussianPosteriorMean().to(dtype)
    prior = DenoiserPrior(denoiser, s)
    t = torch.tensor([0, 10, 250, 700])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = prior(x.to(dtype), t)
    x0 = s.pred_x0(out.double(), t, x)
    abar = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    sigma_t = ((1 - abar) / abar).sqrt()
    # the formula: x0 = 2 D((x_t / sqrt(abar) + 1) / 2, sigma_t / 2) - 1
    y, sd = (x / abar.sqrt() + 1) / 2, sigma_t / 2
    expected = 2 * (MU + S0**2 / (S0**2 + sd**2) * (y - MU)) - 1
    # ... which is E[x0 | x_t] of the Gaussian model on the [-1, 1] scale (m, S = 2 MU - 1, 2 S0)
    m, S2 = 2 * MU - 1, (2 * S0) ** 2
    bayes = m + abar.sqrt() * S2 / (abar * S2 + 1 - abar) * (x - abar.sqrt() * m)
    assert (expected - bayes).abs().max() < 1e-10
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert (x0 - expected).abs().max() < tol
    # the output is the scheduler's kind: eps, x0 or v of that x0
    if prediction_type == "sample":
        assert (out.double() - expected).abs().max() < tol
    # the denoiser got an (N,) sigma tensor: sigma_t / 2 on the [0, 1] scale
    (sigma,) = denoiser.sigmas
    assert sigma.shape == (4,) and sigma.dtype == dtype
    assert (sigma.double() - sd.flatten()).abs().max() < 1e-6
    assert model_dtype(prior) == dtype  # the denoiser's parameters are the prior's


def test_denoiser_prior_sigma_range():
    s = Scheduler()
    prior = DenoiserPrior(lambda x, sigma: x, s, sigma_range=(0.0, 0.1))
    first, last = prior.valid_timesteps()
    assert first == 0 and float(s.noise_level(last)) / 2 <= 0.1 < float(s.noise_level(last + 1)) / 2
    x = torch.zeros(2, 3, 4, 4)
    prior(x, torch.tensor([0, last]))  # inside: fine
    with pytest.raises(ValueError, match=rf"t={last + 1}\b.*\[0, 0\.1\]"):
        prior(x, torch.tensor([0, last + 1]))
    with pytest.raises(ValueError, match="t=999"):
        prior(x, 999)
    lower = DenoiserPrior(lambda x, sigma: x, s, sigma_range=(0.05, 1.0))
    with pytest.raises(ValueError, match=r"t=0\b"):
        lower(x, 0)
    # default: no limit
    assert DenoiserPrior(lambda x, sigma: x, s)(x, 999).shape == x.shape
    with pytest.raises(ValueError, match="sigma_range"):
        DenoiserPrior(lambda x, sigma: x, s, sigma_range=(0.2, 0.1))


def test_denoiser_prior_runs_in_the_sampler():
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    op = Denoise(25 / 255)
    g = torch.Generator().manual_seed(0)
    clean = (MU + S0 * torch.randn(3, 16, 16, generator=g)).clamp(0, 1)
    y = op.degrade(clean, g)
    prior = DenoiserPrior(GaussianPosteriorMean(), Scheduler(prediction_type="sample"),
                          sigma_range=(0.0, 0.5))
    result = DIPInitializedSampler(
        prior,
        prior.scheduler,
        SamplerConfig(init="observation", steps=2),
        device="cpu",
        progress=False,
    )(y, op, seed=0)
    assert result.image.shape == (3, 16, 16) and torch.isfinite(result.image).all()
