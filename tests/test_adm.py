"""guided-diffusion (ADM) UNet: architecture, safe .pt loading, config inference, sampling."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from dipprior.diffusion import (
    ADM_PRESETS,
    ADMUNet,
    Scheduler,
    adm_unet,
    load,
    load_pretrained,
    save,
)
from dipprior.diffusion.adm_checkpoint import _matching_preset, infer_adm_config, read_state_dict
from dipprior.operators import Denoise, Inpaint, random_pixel_mask
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig

REFERENCE = json.loads((Path(__file__).parent / "data" / "adm_reference.json").read_text())
TINY = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2), attention_ds=(4,),
            num_head_channels=16)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (the zero-initialised output convolutions included), so that a
    wrong name or order cannot hide behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _x_t():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=g), torch.tensor([10, 700])


def _save_pt(state, path: Path) -> Path:
    torch.save(state, path)
    return path


# --------------------------------------------------------------------- architecture
@pytest.mark.parametrize("name", sorted(ADM_PRESETS))
def test_names_and_shapes_are_guided_diffusions(name):
    """Against guided-diffusion's create_model (tests/data/make_adm_reference.py)."""
    with torch.device("meta"):
        net = adm_unet(name)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == REFERENCE["shapes"][name]


def test_output_is_guided_diffusions():
    """A small guided-diffusion UNetModel's epsilon and variance, stored by
    tests/data/make_adm_reference.py, with the same deterministic weights."""
    sys.path.insert(0, str(Path(__file__).parent / "data"))
    try:
        from make_adm_reference import fill, tiny_input
    finally:
        sys.path.pop(0)
    flags = dict(REFERENCE["tiny"]["flags"])
    net = fill(ADMUNet(model_channels=flags["model_channels"],
                       num_res_blocks=flags["num_res_blocks"],
                       channel_mult=flags["channel_mult"],
                       attention_ds=flags["attention_resolutions"], num_heads=flags["num_heads"],
                       num_head_channels=flags["num_head_channels"]))
    x, t = tiny_input()
    with torch.no_grad():
        eps, var = net(x, t, return_variance=True)
    assert torch.allclose(eps.flatten(), torch.tensor(REFERENCE["tiny"]["eps"]), atol=1e-5)
    assert torch.allclose(var.flatten(), torch.tensor(REFERENCE["tiny"]["var"]), atol=1e-5)


@pytest.mark.parametrize("name, params", [("adm-imagenet256-uncond", 552_814_086),
                                          ("adm-ffhq256", 93_563_910)])
def test_presets_have_the_published_parameter_counts(name, params):
    with torch.device("meta"):
        net = adm_unet(name)
    assert sum(p.numel() for p in net.parameters()) == params == ADM_PRESETS[name]["parameters"]
    assert net.learned_variance and net.multiple == 32


def test_any_size_and_the_variance_channels():
    net = _randomised(ADMUNet(**TINY))
    x = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        eps, var = net(x, torch.tensor([5, 500]), return_variance=True)
        alone = net(x[:1], 5)  # a scalar t broadcasts
    assert eps.shape == var.shape == (2, 3, 20, 28)
    assert torch.allclose(alone, eps[:1], atol=1e-5) and not torch.allclose(eps[0], eps[1])
    with pytest.raises(ValueError, match="x: expected shape"):
        net(torch.randn(1, 4, 8, 8), 3)
    with pytest.raises(ValueError, match="t: expected"):
        net(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="no variance head"):
        ADMUNet(**{**TINY, "out_channels": 3})(x, 1, return_variance=True)


def test_bf16_autocast_is_close_to_float32():
    net = _randomised(ADMUNet(**TINY))
    x, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), 300
    with torch.no_grad():
        full = net(x, t)
        net.autocast = torch.bfloat16
        low = net(x, t)
    assert low.dtype == torch.float32 and not torch.equal(low, full)
    assert float((low - full).abs().max()) < 0.05 * float(full.abs().max())
    net.autocast = None  # leaves a caller's autocast in force
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outer = net(x, t)
    assert not torch.equal(outer, full)
    assert float((outer - full).abs().max()) < 0.05 * float(full.abs().max())


def test_bad_heads_are_refused():
    with pytest.raises(ValueError, match="num_head_channels: 24 does not divide"):
        ADMUNet(**{**TINY, "num_head_channels": 24})
    with pytest.raises(ValueError, match="model_channels"):
        ADMUNet(model_channels=0, num_res_blocks=1)


# ------------------------------------------------------------------- config inference
LAYOUTS = [
    TINY,
    dict(model_channels=32, num_res_blocks=2, channel_mult=(1, 1, 2), attention_ds=(2, 4),
         num_heads=2, use_scale_shift_norm=False, resblock_updown=False,
         use_new_attention_order=True),
    dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_ds=(),
         num_heads=1, resblock_updown=False, conv_resample=False, out_channels=3),
]


@pytest.mark.parametrize("flags", LAYOUTS)
def test_config_is_inferred_from_shapes(flags):
    net = ADMUNet(**flags)
    inferred = infer_adm_config(net.state_dict())
    shape_flags = {k: v for k, v in net.config.items() if k not in
                   ("num_heads", "num_head_channels", "num_heads_upsample",
                    "use_new_attention_order", "dropout")}
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in inferred.items()} == shape_flags


@pytest.mark.parametrize("name", sorted(ADM_PRESETS))
def test_published_shapes_are_recognised(name):
    with torch.device("meta"):
        state = adm_unet(name).state_dict()
    assert _matching_preset(infer_adm_config(state)) == name


@pytest.mark.parametrize("flags", LAYOUTS)
def test_pt_round_trip_gives_the_same_epsilon(tmp_path, flags):
    net = _randomised(ADMUNet(**flags))
    heads = {k: flags[k] for k in ("num_heads", "num_head_channels", "use_new_attention_order")
             if k in flags}
    model, scheduler = load_pretrained(_save_pt(net.state_dict(), tmp_path / "m.pt"),
                                       device="cpu", **heads)
    assert isinstance(model, ADMUNet) and model.config == net.config and not model.training
    assert scheduler.to_config() == Scheduler(beta_schedule="linear").to_config()
    x, t = _x_t()
    with torch.no_grad():
        assert torch.equal(model(x, t), net(x, t))


def test_safetensors_conversion_round_trips(tmp_path):
    net = _randomised(ADMUNet(**TINY))
    model, scheduler = load_pretrained(_save_pt(net.state_dict(), tmp_path / "m.pt"),
                                       device="cpu", num_head_channels=16)
    save(model, scheduler, tmp_path / "converted")
    again, _ = load_pretrained(tmp_path / "converted", device="cpu")
    assert isinstance(again, ADMUNet) and again.config == net.config
    x, t = _x_t()
    with torch.no_grad():
        assert torch.equal(again(x, t), net(x, t))
    assert load(tmp_path / "converted")[0].config == net.config


# ----------------------------------------------------------------------- safety/errors
class _WritesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "code ran"))


def test_a_pickle_holding_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = _save_pt({"time_embed.0.weight": torch.zeros(2, 2), "x": _WritesAFile(marker)},
                    tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused, it holds code.*nothing was run"):
        load_pretrained(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the poison is real: a plain unpickle runs it
    assert marker.read_text() == "code ran"


def test_state_dict_wrappers_and_prefixes_are_read(tmp_path):
    state = {"a.weight": torch.ones(2)}
    wrapped = _save_pt({"state_dict": state}, tmp_path / "w.pt")
    assert read_state_dict(wrapped).keys() == {"a.weight"}
    assert read_state_dict(_save_pt({"module.a.weight": torch.ones(2)},
                                    tmp_path / "p.pth")).keys() == {"a.weight"}
    with pytest.raises(ValueError, match="expected a state_dict"):
        read_state_dict(_save_pt([torch.ones(2)], tmp_path / "l.pt"))
    with pytest.raises(ValueError, match="several state_dicts"):
        read_state_dict(_save_pt({"model": state, "ema": state}, tmp_path / "two.pt"))
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        read_state_dict(tmp_path / "junk.pt")


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path):
    state = ADMUNet(**TINY).state_dict()
    conditional = {**state, "label_emb.weight": torch.zeros(1000, 128)}
    with pytest.raises(ValueError, match="class-conditional.*1000 classes"):
        load_pretrained(_save_pt(conditional, tmp_path / "c.pt"), num_head_channels=16)
    extra = {**state, "sqrt_alphas_cumprod": torch.ones(1000)}
    with pytest.raises(ValueError, match="unexpected keys.*sqrt_alphas_cumprod"):
        load_pretrained(_save_pt(extra, tmp_path / "e.pt"), num_head_channels=16)
    missing = {k: v for k, v in state.items() if k != "middle_block.1.qkv.bias"}
    with pytest.raises(ValueError, match="missing keys.*middle_block.1.qkv.bias"):
        load_pretrained(_save_pt(missing, tmp_path / "m.pt"), num_head_channels=16)
    shaped = {**state, "middle_block.1.proj_out.bias": torch.zeros(7)}
    with pytest.raises(ValueError, match="wrong shapes.*proj_out.bias"):
        load_pretrained(_save_pt(shaped, tmp_path / "s.pt"), num_head_channels=16)
    nan = {**state, "out.2.bias": torch.full((6,), float("nan"))}
    with pytest.raises(ValueError, match="NaN or inf.*out.2.bias"):
        load_pretrained(_save_pt(nan, tmp_path / "n.pt"), num_head_channels=16)
    with pytest.raises(ValueError, match="attention heads do not show"):
        load_pretrained(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="not a guided-diffusion UNet"):
        load_pretrained(_save_pt({"w": torch.ones(1)}, tmp_path / "o.pt"), num_heads=1)
    with pytest.raises(TypeError, match="unknown ADMUNet flags.*heads"):
        load_pretrained(tmp_path / "s.pt", heads=4)
    for drop in ("input_blocks.1.0.emb_layers.1.weight", "input_blocks.3.0.in_layers.2.weight"):
        broken = {k: v for k, v in state.items() if not k.startswith(drop.rsplit(".", 2)[0])}
        with pytest.raises(ValueError, match="not a guided-diffusion UNet"):
            load_pretrained(_save_pt(broken, tmp_path / "b.pt"), num_heads=1)
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(tmp_path / "absent.pt", preset="adm-ffhq256")


@pytest.mark.parametrize("flags, match", [
    ({"num_head_channels": 0}, "num_head_channels: expected a positive integer or -1"),
    ({"num_heads": 0}, "num_heads: expected a positive integer, got 0"),
    ({"num_heads": 2, "dropout": "x"}, "dropout: expected a number in"),
])
def test_bad_head_flags_are_named(tmp_path, flags, match):
    """num_head_channels=0 was a ZeroDivisionError (#30)."""
    path = _save_pt(ADMUNet(**TINY).state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=f"m.pt: {match}"):
        load_pretrained(path, **flags)


def test_integer_pt_weights_are_cast_to_float32(tmp_path):
    net = _randomised(ADMUNet(**TINY))
    ints = {k: (100 * v).round().to(torch.int32) for k, v in net.state_dict().items()}
    model, _ = load_pretrained(_save_pt(ints, tmp_path / "i.pt"), device="cpu",
                               num_head_channels=16)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    assert torch.equal(model.out[2].weight, ints["out.2.weight"].float())


def test_num_heads_overrides_a_presets_head_width(tmp_path):
    with torch.device("meta"):
        state = adm_unet("adm-ffhq256").state_dict()
    from dipprior.diffusion.adm_checkpoint import infer_adm_config
    assert _matching_preset(infer_adm_config(state)) == "adm-ffhq256"
    net = _randomised(ADMUNet(**TINY))
    path = _save_pt(net.state_dict(), tmp_path / "m.pt")
    model, _ = load_pretrained(path, num_heads=2)
    assert model.config["num_head_channels"] == -1 and model.config["num_heads"] == 2


def test_preset_names_and_flags_are_checked():
    with pytest.raises(ValueError, match="weights are not shipped.*ffhq_10m.pt"):
        load_pretrained("adm-ffhq256")
    with pytest.raises(TypeError, match=r"\.pt/\.pth files only"):
        load_pretrained(preset="adm-ffhq256")
    with pytest.raises(ValueError, match="unknown ADM preset"):
        adm_unet("adm-celeba")


# ------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("task", ["inpaint", "denoise"])
def test_the_sampler_runs_an_adm_prior(tmp_path, task):
    net = _randomised(ADMUNet(**TINY), seed=3)
    model, scheduler = load_pretrained(_save_pt(net.state_dict(), tmp_path / "m.pt"),
                                       device="cpu", num_head_channels=16)
    clean = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))  # a batch
    g = torch.Generator().manual_seed(0)
    op = Inpaint(random_pixel_mask((24, 20), 0.5, g)) if task == "inpaint" else Denoise(0.1)
    y = op.degrade(clean, g)
    calls = []

    def counted(x, t):
        calls.append(int(t[0]))
        return model(x, t)

    r = DIPInitializedSampler(
        counted, scheduler, SamplerConfig(init="observation", t0=200, steps=4), progress=False
    )(y, op, seed=0)
    # one batched call per step, both images at the same timestep
    assert r.nfe == [4, 4] and calls == r.timesteps[0] == r.timesteps[1] and len(calls) == 4
    assert r.image.shape == clean.shape and torch.isfinite(r.image).all()


# ------------------------------------------------------------------ the references
def _guided_diffusion():
    root = os.environ.get("DIPPRIOR_GUIDED_DIFFUSION")
    if not root or not (Path(root) / "guided_diffusion" / "unet.py").is_file():
        pytest.skip("set DIPPRIOR_GUIDED_DIFFUSION to a checkout of openai/guided-diffusion")
    sys.path.insert(0, root)
    try:
        from guided_diffusion.unet import UNetModel
    finally:
        sys.path.remove(root)
    return UNetModel


@pytest.mark.slow
@pytest.mark.parametrize("new_order", [False, True])
def test_matches_openai_guided_diffusion(tmp_path, new_order):
    UNetModel = _guided_diffusion()
    torch.manual_seed(0)
    ref = _randomised(UNetModel(
        image_size=64, in_channels=3, model_channels=64, out_channels=6, num_res_blocks=1,
        attention_resolutions=(4, 8), channel_mult=(1, 1, 2, 2), num_heads=4,
        num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
        use_new_attention_order=new_order))
    model, _ = load_pretrained(_save_pt(ref.state_dict(), tmp_path / "gd.pt"), device="cpu",
                               num_head_channels=32, use_new_attention_order=new_order)
    x, t = _x_t()
    with torch.no_grad():
        out = ref(x, t)
        eps, var = model(x, t, return_variance=True)
    assert torch.allclose(eps, out[:, :3], atol=1e-5) and torch.allclose(var, out[:, 3:],
                                                                          atol=1e-5)


@pytest.mark.slow
def test_matches_deepinv_diffunet(tmp_path):
    deepinv = pytest.importorskip("deepinv", reason="deepinv is optional (it pulls torchvision)")
    ref = _randomised(deepinv.models.DiffUNet(large_model=False, pretrained=None))
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("sqrt_")}
    model, _ = load_pretrained(_save_pt(state, tmp_path / "diffunet.pt"), device="cpu")
    x, t = _x_t()
    with torch.no_grad():
        out = ref.forward_diffusion(x, t)
        eps = model(x, t)
    assert torch.allclose(eps, out[:, :3], atol=1e-5)


def test_bf16_is_automatic_only_where_it_is_native(monkeypatch):
    from dipprior.diffusion.precision import autocast_dtype, fast_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, native in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert fast_bf16("cuda") is native
        assert autocast_dtype("auto", "cuda") == (torch.bfloat16 if native else None)
        assert autocast_dtype("float32", "cuda") is None  # the default never follows the device
    assert fast_bf16("meta") is False and autocast_dtype("auto", "meta") is None


@pytest.mark.parametrize("native", [False, True])
def test_every_loader_is_float32_whatever_the_cpu(tmp_path, monkeypatch, native):
    """The same call gives the same numbers on a CPU with native bf16 and on one without."""
    from dipprior.diffusion import precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: native)
    net = _randomised(ADMUNet(**LAYOUTS[0]))
    heads = {k: LAYOUTS[0][k] for k in ("num_heads", "num_head_channels",
                                        "use_new_attention_order") if k in LAYOUTS[0]}
    model, _ = load_pretrained(_save_pt(net.state_dict(), tmp_path / "m.pt"), device="cpu",
                               **heads)
    shipped, _ = load_pretrained(device="cpu")
    assert model.autocast is None and shipped.autocast is None
    auto, _ = load_pretrained(tmp_path / "m.pt", device="cpu", dtype="auto", **heads)
    assert auto.autocast == (torch.bfloat16 if native else None)


def test_dtype_option_runs_bf16_and_stays_close():
    from dipprior.diffusion.precision import set_precision

    model, _ = load_pretrained(device="cpu")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        ref = model(x, t)
        set_precision(model, "bfloat16")
        low = model(x, t)
    assert model.autocast == torch.bfloat16 and low.dtype == torch.float32
    assert not torch.equal(low, ref)  # it did run in bf16
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()
    with pytest.raises(ValueError, match="dtype"):
        set_precision(model, "int8")
    with pytest.raises(TypeError, match="dtype='bfloat16'"):
        set_precision(torch.nn.Conv2d(3, 3, 1), "bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        load_pretrained(device="cpu", dtype="half-ish")
