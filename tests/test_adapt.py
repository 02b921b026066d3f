"""Test-time adaptation of the prior (pipeline.adapt): exactness, unbiasedness, effect, seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dipprior.diffusion import Scheduler, UNet
from dipprior.operators import Blur, Denoise, Inpaint, gaussian_kernel
from dipprior.pipeline import DIPInitializedSampler, SamplerConfig
from dipprior.pipeline.adapt import (
    Adaptation,
    AdaptConfig,
    measurement_loss,
    r2r_loss,
    r2r_pair,
    with_lora,
)


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    model = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    with torch.no_grad():  # a fresh UNet's zero output layer would pass no gradient back
        model.conv_out.weight.normal_(0, 0.05)
    return model.eval()


@pytest.fixture
def inpainting():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    op = Inpaint((torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) > 0.5).float())
    return x, op, op.degrade(x, torch.Generator().manual_seed(3))


@pytest.fixture
def denoising():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    op = Denoise(0.1)
    return x, op, op.degrade(x, torch.Generator().manual_seed(3))


CHAIN = SamplerConfig(init="classical", t0=200, steps=4, zeta=1.0, samples=2)
ONE_STEP = SamplerConfig(init="observation", steps=1, lam=320.0)


def run(model, config, y, op, seed=0):
    return DIPInitializedSampler(model, Scheduler(), config, progress=False)(y, op, seed=seed)


@pytest.mark.parametrize("task", ["inpainting", "denoising"])
def test_zero_iterations_is_the_plain_chain_bitwise(task, request):
    _, op, y = request.getfixturevalue(task)
    model, config = tiny_unet(), CHAIN if task == "inpainting" else ONE_STEP
    plain = run(model, config, y, op)
    adapted = run(model, config.replace(adapt=AdaptConfig(iterations=0)), y, op)
    assert torch.equal(plain.image, adapted.image)
    assert adapted.adapt_iterations == 0 and plain.adapt_iterations is None
    assert adapted.nfe == plain.nfe


def test_adaptation_changes_the_result_deterministically(inpainting):
    _, op, y = inpainting
    model = tiny_unet()
    config = CHAIN.replace(adapt=AdaptConfig(iterations=2, lr=1e-2))
    a, b = run(model, config, y, op, seed=0), run(model, config, y, op, seed=0)
    assert torch.equal(a.image, b.image)
    assert a.adapt_iterations == 2 * 4 and a.seconds["adapt"] > 0
    assert not torch.equal(a.image, run(model, CHAIN, y, op).image)
    assert not torch.equal(a.image, run(model, config, y, op, seed=1).image)
    every = run(model, config.replace(adapt=AdaptConfig(iterations=2, every=3)), y, op)
    assert every.adapt_iterations == 2 * 2  # steps 0 and 3 of 4


def test_the_callers_weights_are_untouched(denoising):
    _, op, y = denoising
    model = tiny_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(model, ONE_STEP.replace(adapt=AdaptConfig(iterations=3, lr=1e-2)), y, op)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad is False for p in model.parameters())


def test_shipped_prior_untouched_by_adaptation(denoising):
    from dipprior.diffusion import load_pretrained

    model, scheduler = load_pretrained("cbsd432-small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, op, y = denoising
    DIPInitializedSampler(model, scheduler, ONE_STEP.replace(adapt=AdaptConfig(iterations=1)),
                          progress=False)(y, op)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again, _ = load_pretrained("cbsd432-small")
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_shipped_prior_untouched_by_the_best_budget(denoising):
    """budget="best" adapts a copy of the shipped prior and ensembles it; the weights stay."""
    from dipprior.diffusion import load_pretrained

    model, scheduler = load_pretrained("cbsd432-small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, op, y = denoising
    result = DIPInitializedSampler(model, scheduler, budget="best", progress=False)(y, op)
    assert result.adapt_iterations > 0 and result.nfe == 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_a_batch_adapts_each_image_on_its_own(inpainting, denoising):
    model = tiny_unet()
    _, op, y = denoising
    config = ONE_STEP.replace(adapt=AdaptConfig(iterations=2, lr=1e-2))
    y2 = y.flip(-1)
    both = run(model, config, torch.stack([y, y2]), op, seed=5)
    assert torch.equal(both.image[0], run(model, config, y, op, seed=5).image)
    assert torch.equal(both.image[1], run(model, config, y2, op, seed=6).image)
    assert both.adapt_iterations == [2, 2]


def test_lora_starts_exactly_as_the_prior_and_skips_image_layers():
    model = tiny_unet()
    adapted, params = with_lora(model, 4, torch.Generator().manual_seed(0))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.equal(adapted(x, t), model(x, t))
    assert not hasattr(adapted.conv_in, "parametrizations")
    assert not hasattr(adapted.conv_out, "parametrizations")
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in adapted.named_parameters() if "original" in n)
    with pytest.raises(TypeError, match="adapt"):
        with_lora(lambda x, t: x, 4, torch.Generator())


def test_r2r_loss_is_unbiased_on_a_gaussian_case():
    # x fixed, y = x + s n, a linear denoiser f(v) = c v + (1 - c) m: over the draws of n and z,
    # mean (f(y_hat) - y_bar)^2 = mean (f(y_hat) - x)^2 + s^2 (1 + 1 / alpha^2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4_000_000, generator=g)
    s, alpha, c, m = 0.2, 0.5, 0.6, 0.5

    def f(v):
        return c * v + (1 - c) * m

    y = x + s * torch.randn(x.shape, generator=g)
    zg = torch.Generator().manual_seed(1)
    loss = float(r2r_loss(f, y, s, alpha, zg))
    y_hat, _ = r2r_pair(y, s, alpha, torch.Generator().manual_seed(1))
    supervised = float((f(y_hat) - x).square().mean())
    assert loss - s ** 2 * (1 + 1 / alpha ** 2) == pytest.approx(supervised, rel=0.02)
    # the noisy target itself is biased by far more than that tolerance
    naive = float((f(y_hat) - y).square().mean())
    assert abs(naive - s ** 2 - supervised) > 0.05 * supervised
    # the recorrupted noise has std s sqrt(1 + alpha^2)
    assert float((y_hat - x).std()) == pytest.approx(s * (1 + alpha ** 2) ** 0.5, rel=0.01)


def test_adapting_lowers_the_measurement_loss(inpainting):
    _, op, y = inpainting
    s = Scheduler()
    adaptation = Adaptation(tiny_unet(), s, AdaptConfig(iterations=30, lr=1e-2), y, op,
                            "measurement", torch.Generator().manual_seed(0))
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))

    def loss() -> float:
        with torch.no_grad():
            return float(measurement_loss(adaptation._x0(x_t, 200), adaptation.y_model, op))

    before = loss()
    with torch.inference_mode():  # as reverse_diffusion calls it
        adaptation.hook(x_t, 200, 0)
    assert loss() < 0.8 * before
    assert adaptation.iterations_run == 30


def test_adapting_lowers_the_r2r_loss(denoising):
    _, op, y = denoising
    adaptation = Adaptation(tiny_unet(), Scheduler(), AdaptConfig(iterations=60, lr=1e-2,
                                                                    batch=4),
                            y, op, "r2r", torch.Generator().manual_seed(0))
    alpha, sigma = adaptation.config.alpha, op.noise_sigma
    constant = sigma ** 2 * (1 + 1 / alpha ** 2)  # the part no denoiser can reduce

    def loss() -> float:  # the same 16 recorruptions before and after
        adaptation.generator = torch.Generator().manual_seed(99)
        with torch.no_grad():
            return sum(float(adaptation._loss(None, 0)) for _ in range(16)) / 16 - constant

    before = loss()
    adaptation.generator = torch.Generator().manual_seed(0)
    adaptation.hook(torch.zeros(1, 3, 16, 16), 50, 0)
    assert loss() < 0.9 * before


def test_measurement_loss_matches_a_hand_computed_case():
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1.0
    op = Inpaint(mask)
    x = torch.full((3, 4, 4), 0.25)  # model scale -0.5
    y = torch.full((3, 4, 4), 0.75) * mask  # observed pixel 0.75 -> model scale 0.5
    from dipprior.pipeline.consistency import observation_to_model_scale

    loss = measurement_loss((2 * x - 1).unsqueeze(0), observation_to_model_scale(y, op), op)
    assert float(loss) == pytest.approx(1.0 / 16)  # one pixel of 16 off by 1 per channel


def test_deblurring_adapts_through_the_blur():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    op = Blur(gaussian_kernel(5, 1.0), 0.01)
    y = op.degrade(x, torch.Generator().manual_seed(3))
    config = CHAIN.replace(lam=3.0, adapt=AdaptConfig(iterations=1))
    result = run(tiny_unet(), config, y, op)
    assert result.adapt_iterations == 4 and torch.isfinite(result.image).all()


def test_bad_settings_are_named(inpainting):
    for field, value in (("iterations", -1), ("every", 0), ("rank", 0), ("batch", 1.5),
                         ("lr", 0.0), ("alpha", float("nan"))):
        with pytest.raises(ValueError, match=field):
            AdaptConfig(**{field: value})
    with pytest.raises(ValueError, match="loss"):
        AdaptConfig(loss="l1")
    with pytest.raises(TypeError, match="adapt"):
        SamplerConfig(adapt={"iterations": 3})
    _, op, y = inpainting
    with pytest.raises(ValueError, match="r2r"):
        run(tiny_unet(), CHAIN.replace(adapt=AdaptConfig(loss="r2r")), y, op)
    with pytest.raises(TypeError, match="adapt"):
        run(lambda x, t: torch.zeros_like(x), CHAIN.replace(adapt=AdaptConfig()), y, op)


def test_a_rank_beyond_the_smallest_adapted_layer_is_refused_before_copying(inpainting,
                                                                              monkeypatch):
    """AdaptConfig(rank=10**9) tried to allocate tens of GB (#30)."""
    import copy

    def no_copy(*args):
        raise AssertionError("the model was copied")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    _, op, y = inpainting
    with pytest.raises(ValueError, match=r"rank: 1000000000 is larger than the smallest adapted "
                                         r"layer .*'time_embed.0'.* use rank <= 8"):
        run(tiny_unet(), CHAIN.replace(adapt=AdaptConfig(rank=10**9)), y, op)
    with pytest.raises(ValueError, match="use rank <= 8"):
        with_lora(tiny_unet(), 9, torch.Generator())


def test_a_model_without_layers_to_adapt_is_refused():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x, t):
            return self.conv(x)

    with pytest.raises(ValueError, match="no Conv1d, Conv2d or Linear"):
        with_lora(Tiny(), 2, torch.Generator())


def test_restore_adapt_flag(tmp_path, capsys):
    from dipprior.cli import main
    from dipprior.io import load_image, sample_image, save_image

    save_image(sample_image("coffee", 16), tmp_path / "in.png")
    argv = ["restore", str(tmp_path / "in.png"), "--task", "denoise", "--simulate", "--sigma",
            "25", "--no-progress", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*argv, "--adapt", "2", "--adapt-lr", "1e-3",
                 "--out", str(tmp_path / "adapted.png")]) == 0
    plain, adapted = load_image(tmp_path / "plain.png"), load_image(tmp_path / "adapted.png")
    assert plain.shape == adapted.shape and not torch.equal(plain, adapted)
    capsys.readouterr()
    for extra, needle in ((["--adapt", "-1"], "--adapt: iterations"),
                          (["--adapt-lr", "1e-3"], "--adapt-lr: needs --adapt"),
                          (["--adapt", "2", "--adapt-lr", "0"], "--adapt-lr: lr")):
        assert main([*argv, *extra, "--out", str(tmp_path / "x.png")]) == 2
        assert needle in capsys.readouterr().err


def test_evaluate_denoiser_adds_the_adapted_one_step_on_the_first_crops():
    from dipprior import pretrained
    from dipprior.metrics import psnr

    g = torch.Generator().manual_seed(0)
    images = {k: torch.rand(3, 16, 16, generator=g) for k in "abc"}
    model, s = tiny_unet(), Scheduler()
    adapt = AdaptConfig(iterations=2, lr=1e-2)
    table = pretrained.evaluate_denoiser(model, s, images, sigma=0.1, seed=3, cbm3d=False,
                                         adapt=adapt, adapt_images=2, progress=False)
    rows = table.rows
    assert rows[2].get("Adapted PSNR") in (None, "")
    for i in range(2):  # the sampler's one step on the same noisy crop, seed 3 + i
        clean = images["ab"[i]]
        noisy = Denoise(0.1).degrade(clean, torch.Generator().manual_seed(3 + i))
        expected = run(model, ONE_STEP.replace(adapt=adapt), noisy, Denoise(0.1), seed=3 + i)
        default = run(model, ONE_STEP, noisy, Denoise(0.1), seed=3 + i)
        assert rows[i]["Adapted PSNR"] == pytest.approx(float(psnr(expected.image, clean)))
        assert rows[i]["Default PSNR"] == pytest.approx(float(psnr(default.image, clean)))
        assert rows[i]["Adapted PSNR"] != pytest.approx(rows[i]["Default PSNR"])
        assert rows[i]["Adapted s"] > 0
    zero = pretrained.evaluate_denoiser(model, s, images, sigma=0.1, seed=3, cbm3d=False,
                                        adapt=AdaptConfig(iterations=0), adapt_images=1,
                                        progress=False).rows[0]
    assert zero["Adapted PSNR"] == zero["Default PSNR"]
    with pytest.raises(ValueError, match="adapt_images"):
        pretrained.evaluate_denoiser(model, s, images, adapt=adapt, adapt_images=-1,
                                     cbm3d=False, progress=False)
    assert rows[-1]["Adapted PSNR"] == pytest.approx((rows[0]["Adapted PSNR"]
                                                     + rows[1]["Adapted PSNR"]) / 2)


def test_adapts_under_inference_mode_and_in_bfloat16(inpainting):
    _, op, y = inpainting
    config = CHAIN.replace(samples=1, steps=2, adapt=AdaptConfig(iterations=1, lr=1e-2))
    with torch.inference_mode():  # the copy and its factors are built outside it
        result = run(tiny_unet(), config, y, op)
    assert result.adapt_iterations == 2 and torch.isfinite(result.image).all()
    half = tiny_unet().to(torch.bfloat16)  # factors float32, added in the weight's dtype
    result = run(half, config, y, op)
    assert result.adapt_iterations == 2 and torch.isfinite(result.image).all()
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_lora_covers_conv1d_and_skips_only_the_image_convolutions():
    class WithAttention(nn.Module):  # guided-diffusion's attention uses Conv1d
        def __init__(self):
            super().__init__()
            self.inp, self.mid = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 3, 1)
            self.qkv = nn.Conv1d(3, 9, 1)
            self.out = nn.Conv2d(3, 3, 1)  # the last convolution in module order

        def forward(self, x, t):
            return self.out(self.mid(self.inp(x)))

    adapted, params = with_lora(WithAttention(), 2, torch.Generator().manual_seed(0))
    wrapped = {name for name, m in adapted.named_modules() if hasattr(m, "parametrizations")}
    assert wrapped == {"mid", "qkv"}  # a hidden layer with 3 channels is adapted too
    assert len(params) == 4


def test_restore_forecast_counts_the_adaptation(tmp_path, capsys):
    from dipprior.cli import main
    from dipprior.io import sample_image, save_image

    save_image(sample_image("coffee", 64), tmp_path / "in.png")
    argv = ["restore", str(tmp_path / "in.png"), "--task", "denoise", "--sigma", "25",
            "--no-progress", "--threads", "1", "--time-limit", "5",
            "--out", str(tmp_path / "out.png")]
    assert main([*argv, "--adapt", "5000"]) == 2  # ~15000 model passes: refused before work
    assert "for --adapt" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
    assert main(argv) == 0  # the one step alone fits


# ------------------------------------------------------------ the probe and the per-image rule
PROBED = ONE_STEP.replace(adapt=AdaptConfig(iterations=6, lr=1e-2, probe=3))


def test_the_probe_estimates_the_gain_from_the_observation_alone(denoising):
    x, op, y = denoising
    model = tiny_unet()
    a = run(model, PROBED, y, op, seed=5)
    b = DIPInitializedSampler(model, Scheduler(), PROBED, progress=False)(
        y, op, seed=5, ground_truth=x)  # the clean image is not an input of the rule
    c = DIPInitializedSampler(model, Scheduler(), PROBED, progress=False)(
        y, op, seed=5, ground_truth=torch.zeros_like(x))
    assert isinstance(a.adapt_gain, float) and a.adapt_gain == b.adapt_gain == c.adapt_gain
    assert torch.equal(a.image, b.image) and torch.equal(a.image, c.image)
    assert run(model, PROBED, y, op, seed=6).adapt_gain != a.adapt_gain  # drawn from the seed
    # estimating only does not change the training draws: the image is the unprobed one's
    unprobed = run(model, ONE_STEP.replace(adapt=AdaptConfig(iterations=6, lr=1e-2)), y, op, 5)
    assert torch.equal(unprobed.image, a.image) and unprobed.adapt_gain is None
    assert run(model, ONE_STEP, y, op).adapt_gain is None


def test_the_gain_estimate_is_the_r2r_difference_in_percent_of_the_noise(denoising):
    _, op, y = denoising
    adaptation = Adaptation(tiny_unet(), Scheduler(), AdaptConfig(probe=1), y, op, "r2r",
                            torch.Generator().manual_seed(0))
    variance = op.noise_sigma ** 2 * (1 + 0.5 ** 2)  # 0.1^2 * 1.25 = 0.0125
    assert adaptation.estimated_gain(0.06, 0.06 - variance / 100) == pytest.approx(1.0)
    assert adaptation.estimated_gain(0.05, 0.05 + 0.0025) == pytest.approx(-20.0)
    assert adaptation.estimated_gain(0.05, 0.05) == 0.0


def test_the_rule_puts_the_prior_back_exactly_or_adapts_on(denoising):
    _, op, y = denoising
    model, plain = tiny_unet(), run(tiny_unet(), ONE_STEP, y, op)
    never = ONE_STEP.replace(adapt=AdaptConfig(iterations=6, lr=1e-2, probe=3, min_gain=1e9))
    stopped = run(model, never, y, op, seed=5)
    assert torch.equal(stopped.image, plain.image)  # the prior exactly as trained
    assert stopped.adapt_iterations == 3  # the probe's, not the rest
    always = never.replace(adapt=AdaptConfig(iterations=6, lr=1e-2, probe=3, min_gain=-1e9))
    on = run(model, always, y, op, seed=5)
    assert on.adapt_iterations == 6
    assert torch.equal(on.image, run(model, PROBED, y, op, seed=5).image)
    assert stopped.adapt_gain == on.adapt_gain


def test_bad_probes_are_named(inpainting):
    with pytest.raises(ValueError, match="probe"):
        AdaptConfig(iterations=3, probe=4)
    with pytest.raises(ValueError, match="probe"):
        AdaptConfig(probe=2, loss="measurement")
    with pytest.raises(ValueError, match="min_gain"):
        AdaptConfig(min_gain=0.1)  # a rule without a probe
    with pytest.raises(ValueError, match="min_gain"):
        AdaptConfig(probe=2, min_gain=float("nan"))
    _, op, y = inpainting
    with pytest.raises(ValueError, match="probe"):
        run(tiny_unet(), CHAIN.replace(adapt=AdaptConfig(iterations=2, probe=1)), y, op)

