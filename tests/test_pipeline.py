"""DIPInitializedSampler and the baselines: NFE accounting, t0 handling, guidance, errors."""

from __future__ import annotations

import inspect
import math
import sys

import pytest
import torch

from dipprior._seeds import DIFFUSION_NOISE, DIP_INPUT_NOISE, stream_seed
from dipprior._tensor import to_image_scale, to_model_scale
from dipprior.diffusion import Scheduler, UNet
from dipprior.dip import DIPConfig, fit
from dipprior.estimators import estimate_error_std
from dipprior.operators import Denoise, Inpaint, SuperResolution, random_pixel_mask
from dipprior.pipeline import (
    CBM3DBaseline,
    DIPBaseline,
    DIPInitializedSampler,
    SamplerConfig,
    SampleResult,
    resolve_t0,
)
from dipprior.pipeline.consistency import observation_to_model_scale
from dipprior.pipeline.inputs import noise_seed
from dipprior.pipeline.start import auto_t0

SIGMA = 25 / 255
DIP = DIPConfig(channels=8, depth=3, iterations=10, progress=False)


def _smooth_image(size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                         align_corners=False)
    return (0.15 + 0.7 * up[0]).clamp(0, 1)


@pytest.fixture(scope="module")
def scheduler() -> Scheduler:
    return Scheduler()


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    return _smooth_image()


@pytest.fixture(scope="module")
def noisy(clean):
    op = Denoise(SIGMA)
    return op, op.degrade(clean, torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def dip_image(noisy):
    op, y = noisy
    return fit(y, op, config=DIP).image


class Counting:
    """Wraps a model and counts its calls (and keeps the inputs it saw)."""

    def __init__(self, model):
        self.model, self.calls, self.inputs = model, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.inputs.append((x.clone(), t.clone()))
        return self.model(x, t)


# ----------------------------------------------------------------------------- NFE


@pytest.mark.parametrize("init, t0, steps", [("dip", 60, 4), ("noise", "auto", 3),
                                              ("observation", "auto", 5), ("dip", 0.05, 7)])
def test_nfe_equals_model_calls(model, scheduler, noisy, dip_image, init, t0, steps):
    op, y = noisy
    counter = Counting(model)
    sampler = DIPInitializedSampler(
        counter, scheduler, SamplerConfig(init=init, t0=t0, steps=steps), dip=DIP, progress=False
    )
    r = sampler(y, op, seed=0, dip_image=dip_image if init == "dip" else None)
    assert isinstance(r, SampleResult)
    assert r.nfe == counter.calls == steps == len(r.timesteps)
    assert [int(t[0]) for _, t in counter.inputs] == r.timesteps
    assert r.timesteps[0] == r.t0 and r.timesteps[-1] == 0
    assert r.image.shape == y.shape and 0 <= float(r.image.min()) <= float(r.image.max()) <= 1
    assert set(r.seconds) == {"dip", "start", "diffusion", "adapt", "total"}
    assert r.seconds["adapt"] == 0.0 and r.adapt_iterations is None


def test_auto_t0_clamps_steps_and_counts(model, scheduler, noisy, clean):
    op, y = noisy
    good = clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    counter = Counting(model)
    r = DIPInitializedSampler(counter, scheduler, SamplerConfig(steps=1000), progress=False)(
        y, op, dip_image=good)
    assert r.t0 == auto_t0(scheduler, r.error_std) < 100
    assert r.nfe == counter.calls == r.t0 + 1
    assert r.timesteps == list(range(r.t0, -1, -1))


def test_full_dip_run_counts_and_times(model, scheduler, noisy):
    op, y = noisy
    counter = Counting(model)
    r = DIPInitializedSampler(
        counter, scheduler, SamplerConfig(t0=30, steps=3), dip=DIP, progress=False
    )(y, op)
    assert r.nfe == counter.calls == 3
    assert r.dip_image is not None and r.dip_image.shape == y.shape
    assert r.dip_iterations == DIP.iterations
    assert r.seconds["dip"] > 0 and r.seconds["total"] >= r.seconds["dip"] + r.seconds[
        "diffusion"] - 1e-6
    assert torch.equal(r.dip_image, fit(y, op, config=DIP, seed=0).image)
    base = DIPBaseline(DIP, progress=False)(y, op, seed=0)
    assert torch.equal(base.image, r.dip_image.clamp(0, 1))
    assert base.nfe == 0 and base.t0 is None and base.dip_iterations == DIP.iterations


# ----------------------------------------------------------------------------- t0


def test_resolve_t0():
    assert resolve_t0(0, 1000) == 0
    assert resolve_t0(999, 1000) == 999
    assert resolve_t0(1.0, 1000) == 999
    assert resolve_t0(0.25, 1000) == round(0.25 * 999) == 250
    for bad in (-1, 1000, 0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="t0"):
            resolve_t0(bad, 1000)
    with pytest.raises(TypeError, match="t0"):
        resolve_t0(True, 1000)


def test_t0_zero_is_one_step_at_t0(model, scheduler, noisy, dip_image):
    op, y = noisy
    r = DIPInitializedSampler(model, scheduler, SamplerConfig(t0=0, steps=1), progress=False)(
        y, op, dip_image=dip_image)
    assert (r.t0, r.nfe, r.timesteps) == (0, 1, [0])
    # at t=0 almost no noise is added and the prior barely moves the DIP image
    assert float((r.image - dip_image.clamp(0, 1)).abs().mean()) < 0.05


def test_t0_last_timestep(model, scheduler, noisy, dip_image):
    op, y = noisy
    r = DIPInitializedSampler(model, scheduler, SamplerConfig(t0=999, steps=2), progress=False)(
        y, op, dip_image=dip_image)
    assert r.timesteps == [999, 0]


def test_strength_one_equals_noise_init_in_distribution(model, scheduler, noisy, dip_image):
    """t0 = 1.0 starts at T-1, where x_t is 0.6% image and 99.99% noise: with the same seed
    (same noise draws) it lands next to init="noise", far closer than another seed does."""
    op, y = noisy
    cfg = SamplerConfig(steps=4, eta=1.0)
    from_dip = DIPInitializedSampler(model, scheduler, cfg, t0=1.0, progress=False)(
        y, op, seed=3, dip_image=dip_image)
    from_noise = DIPInitializedSampler(model, scheduler, cfg, init="noise", progress=False)(
        y, op, seed=3)
    other_seed = DIPInitializedSampler(model, scheduler, cfg, init="noise", progress=False)(
        y, op, seed=4)
    assert from_dip.t0 == from_noise.t0 == scheduler.num_train_timesteps - 1
    assert from_dip.timesteps == from_noise.timesteps
    same = float((from_dip.image - from_noise.image).abs().mean())
    across = float((other_seed.image - from_noise.image).abs().mean())
    assert same < 0.1 * across


def test_observation_init_denoise_starts_at_matching_noise_level(model, scheduler, noisy):
    op, y = noisy
    counter = Counting(model)
    r = DIPInitializedSampler(counter, scheduler, SamplerConfig(init="observation", steps=3),
                              progress=False)(y, op)
    assert r.t0 == scheduler.timestep_for_noise_level(2 * SIGMA)
    abar = float(scheduler.alphas_cumprod[r.t0])
    # y already holds the noise: x_t0 = sqrt(abar) (2y - 1), nothing added
    torch.testing.assert_close(counter.inputs[0][0][0], abar ** 0.5 * (2 * y - 1),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("renoise", ["full", "missing", "auto"])
def test_renoise_of_the_dip_start(model, scheduler, noisy, dip_image, renoise):
    op, y = noisy
    counter = Counting(model)
    r = DIPInitializedSampler(
        counter,
        scheduler,
        SamplerConfig(init="dip", t0=150, steps=2, renoise=renoise),
        progress=False,
    )(y, op, seed=3, dip_image=dip_image)
    abar = float(scheduler.alphas_cumprod[150])
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(noise_seed(3)))
    e = estimate_error_std(dip_image, y, op)
    # full: the forward process's whole noise; missing: the DIP image's estimated error counts
    # as noise already there, so only sigma_t^2 - (2 e)^2 is added; auto: missing, as y is noisy
    missing = renoise != "full"
    extra = ((1 - abar) / abar - (2 * e) ** 2) ** 0.5 if missing else ((1 - abar) / abar) ** 0.5
    expected = abar ** 0.5 * (2 * dip_image - 1 + extra * noise)
    torch.testing.assert_close(counter.inputs[0][0], expected, rtol=0, atol=1e-5)
    assert (r.error_std is not None) == missing
    with pytest.raises(ValueError, match="renoise"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(renoise="some"), )


def test_renoise_auto_is_full_for_noise_free_inpainting(model, scheduler, clean):
    op = Inpaint(random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0)))
    y = op.degrade(clean)
    counter = Counting(model)
    r = DIPInitializedSampler(counter, scheduler, SamplerConfig(init="dip", t0=150, steps=1),
                              progress=False)(y, op, seed=3, dip_image=clean)
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(noise_seed(3)))
    expected = scheduler.add_noise(2 * clean[None] - 1, noise, 150)
    torch.testing.assert_close(counter.inputs[0][0], expected, rtol=0, atol=1e-6)
    assert r.error_std is None


def test_renoise_missing_at_auto_t0_adds_almost_nothing(model, scheduler, noisy, dip_image):
    op, y = noisy
    counter = Counting(model)
    r = DIPInitializedSampler(
        counter, scheduler, SamplerConfig(init="dip", steps=1, renoise="missing"), progress=False
    )(y, op, dip_image=dip_image)
    assert r.t0 == auto_t0(scheduler, r.error_std)
    abar = float(scheduler.alphas_cumprod[r.t0])
    added = counter.inputs[0][0] / abar ** 0.5 - (2 * dip_image - 1)
    # t0's noise level is the one nearest 2 e, so the top-up sqrt(sigma_t0^2 - (2 e)^2) is at
    # most sqrt(2 sigma_t0 gap) for the gap between neighbouring levels; SDEdit adds sigma_t0
    sigma_t0 = float(scheduler.noise_level(r.t0))
    gap = float(scheduler.noise_level(r.t0 + 1) - scheduler.noise_level(max(r.t0 - 1, 0)))
    assert float(added.std()) <= 1.2 * (2 * sigma_t0 * gap) ** 0.5 + 1e-6
    assert float(added.std()) < 0.5 * sigma_t0


def test_start_noise_is_independent_of_a_degradation_with_the_same_seed(model, scheduler, clean):
    # the natural call degrades and restores with one seed; the noise the chain adds must not
    # be the observation's own noise drawn again (it then adds up instead of in quadrature)
    op = Denoise(SIGMA)
    y = op.degrade(clean, torch.Generator().manual_seed(7))
    counter = Counting(model)
    DIPInitializedSampler(counter, scheduler, SamplerConfig(init="observation", t0=300, steps=1),
                          progress=False)(y, op, seed=7)
    abar = float(scheduler.alphas_cumprod[300])
    added = (counter.inputs[0][0][0] / abar ** 0.5 - (2 * y - 1)).flatten()
    observation_noise = ((y - clean) / SIGMA).flatten()
    correlation = torch.nn.functional.cosine_similarity(added, observation_noise, dim=0)
    assert abs(float(correlation)) < 0.2  # 768 independent values: |corr| about 0.04
    assert noise_seed(7) != 7


def test_each_stream_has_its_own_seed():
    # one-to-one per stream, never the caller's seed, and the streams apart for the same seed
    seeds = range(-3, 2000)
    for stream in (DIFFUSION_NOISE, DIP_INPUT_NOISE):
        mapped = [stream_seed(s, stream) for s in seeds]
        assert len(set(mapped)) == len(mapped)
        assert all(m != s % 2**32 and 0 <= m < 2**32 for m, s in zip(mapped, seeds, strict=True))
    assert all(stream_seed(s, DIFFUSION_NOISE) != stream_seed(s, DIP_INPUT_NOISE) for s in seeds)
    assert noise_seed(7) == stream_seed(7, DIFFUSION_NOISE)


def test_observation_init_inpaint_adds_noise(model, scheduler, clean):
    mask = random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    y = op.degrade(clean)
    counter = Counting(model)
    r = DIPInitializedSampler(
        counter, scheduler, SamplerConfig(init="observation", t0=200, steps=2), progress=False
    )(y, op, seed=5)
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(noise_seed(5)))
    expected = scheduler.add_noise(2 * op.pseudo_inverse(y)[None] - 1, noise, 200)
    torch.testing.assert_close(counter.inputs[0][0], expected, rtol=0, atol=1e-6)
    assert r.t0 == 200


# ----------------------------------------------------------------------------- guidance


def test_one_proximal_step_matches_closed_form(model, scheduler, noisy, dip_image):
    """steps=1 from t0: x0 = DiffPIR's data step on the model's x0 estimate, by hand on the
    [0, 1] scale with the official code's rho_t = lam sigma_n^2 / sigma_t^2."""
    op, y = noisy
    t0, lam, seed = 80, 8.0, 7
    r = DIPInitializedSampler(
        model, scheduler, SamplerConfig(t0=t0, steps=1, lam=lam, renoise="full"), progress=False
    )(y, op, seed=seed, dip_image=dip_image)
    abar = float(scheduler.alphas_cumprod[t0])
    eps = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(noise_seed(seed)))
    x_t = abar ** 0.5 * (2 * dip_image[None] - 1) + (1 - abar) ** 0.5 * eps
    with torch.no_grad():
        out = model(x_t, torch.tensor([t0]))
    x0_hat = ((x_t - (1 - abar) ** 0.5 * out) / abar ** 0.5).clamp(-1, 1)
    rho = lam * SIGMA ** 2 / ((1 - abar) / abar)  # DiffPIR: sigma_n on [0, 1], sigma_t on [-1, 1]
    x0_hat01 = (x0_hat[0] + 1) / 2
    x0 = (y + rho * x0_hat01) / (1 + rho)  # argmin ||y - x||^2 + rho ||x - x0_hat||^2
    torch.testing.assert_close(r.image, x0.clamp(0, 1), rtol=0, atol=1e-5)


def test_rho_diffpir_and_deepinv_scales():
    """lam on the official code's scale; deepinv weighs its step with 2 lambda_ (prox of
    gamma ||y - A x||^2 / 2 with gamma = 1 / (2 rho)), so its lambda_ = lam / 2."""
    from dipprior.pipeline.config import rho_diffpir

    sigma_n, sigma_t = 25 / 255, 0.3
    assert rho_diffpir(40, sigma_n, sigma_t) == pytest.approx(40 * sigma_n ** 2 / sigma_t ** 2)
    rho_deepinv = 20 * sigma_n ** 2 / sigma_t ** 2  # deepinv's rhos[t] for lambda_ = 20
    assert 2 * rho_deepinv == pytest.approx(rho_diffpir(40, sigma_n, sigma_t))


def test_dip_as_second_observation_is_the_three_term_proximal(model, scheduler, noisy,
                                                              dip_image, monkeypatch):
    """One step with dip_observation: argmin ||y - x||^2/(2 s^2) + ||x - d||^2/(2 s_d^2)
    + rho/2 ||x - x0_hat||^2, solved here by hand per pixel on the model scale."""
    from dipprior.pipeline.consistency import merge_gaussian

    op, y = noisy
    t0, lam, seed, err = 80, 8.0, 7, 0.05
    sampler = DIPInitializedSampler(
        model,
        scheduler,
        SamplerConfig(t0=t0, steps=1, lam=lam, renoise="full", dip_observation=True),
        progress=False,
    )
    monkeypatch.setattr("dipprior.pipeline.start.estimate_error_std", lambda *a: err)
    r = sampler(y, op, seed=seed, dip_image=dip_image, return_intermediates=True)
    assert r.error_std == err
    x0_hat = 2 * r.intermediates[0]["x0_hat"] - 1  # the model's estimate, model scale
    rho = lam / (4 * scheduler.noise_level(t0) ** 2)
    s2, sd2 = (2 * SIGMA) ** 2, (2 * err) ** 2
    y_m, d_m = 2 * y - 1, 2 * dip_image - 1
    x = (y_m / s2 + d_m / sd2 + rho * x0_hat) / (1 / s2 + 1 / sd2 + rho)
    torch.testing.assert_close(r.image, ((x + 1) / 2).clamp(0, 1), rtol=0, atol=1e-5)
    c, w = merge_gaussian(torch.tensor([2.0]), 3.0, torch.tensor([-1.0]), 0.5)
    assert w == 7.0 and c.item() == pytest.approx((3 * 2 - 4) / 7)
    with pytest.raises(ValueError, match="d_std"):
        merge_gaussian(torch.zeros(1), 1.0, torch.zeros(1), 0.0)


@pytest.mark.parametrize("init", ["dip", "noise", "observation"])
def test_proximal_guidance_keeps_known_pixels(model, scheduler, clean, init):
    mask = random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)  # sigma_y = 0: the data term is a hard constraint
    y = op.degrade(clean)
    dip_image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    sampler = DIPInitializedSampler(
        model,
        scheduler,
        SamplerConfig(init=init, t0=999 if init == "noise" else 150, steps=4, eta=0.5),
        progress=False,
    )
    r = sampler(y, op, dip_image=dip_image if init == "dip" else None,
                return_intermediates=True)
    known = mask.bool().expand(3, -1, -1)
    torch.testing.assert_close(r.image[known], clean[known], rtol=0, atol=1e-6)
    assert len(r.intermediates) == r.nfe
    for step in r.intermediates:
        torch.testing.assert_close(step["x0"][known], clean[known], rtol=0, atol=1e-6)
    # and the missing pixels are filled by the prior, not left at the observation's zeros
    assert float(r.image[~known].abs().mean()) > 0.05


def test_sdedit_without_guidance_ignores_observation(model, scheduler, clean):
    mask = random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    y = op.degrade(clean)
    dip_image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(config=SamplerConfig(t0=150, steps=3, guidance=None), progress=False)
    r = DIPInitializedSampler(model, scheduler, **kw)(y, op, dip_image=dip_image)
    known = mask.bool().expand(3, -1, -1)
    assert float((r.image[known] - clean[known]).abs().max()) > 1e-3
    # plain SDEdit depends on the observation only through the DIP image
    r2 = DIPInitializedSampler(model, scheduler, **kw)(torch.zeros_like(y), op,
                                                       dip_image=dip_image)
    assert torch.equal(r.image, r2.image)


def test_super_resolution_runs_with_cg_proximal(model, scheduler, clean):
    op = SuperResolution(2)
    y = op.degrade(clean)
    r = DIPInitializedSampler(model, scheduler, SamplerConfig(init="observation", t0=100, steps=2),
                              progress=False)(y, op)
    assert r.image.shape == clean.shape and y.shape == (3, 8, 8)
    # sigma_y = 0: the result reproduces the low-resolution observation (up to CG tolerance and
    # the final clamp to [0, 1], which moves a few overshooting pixels)
    assert float((op(r.image) - y).abs().median()) < 1e-4
    assert float((op(r.image) - y).abs().mean()) < 2e-3


def test_super_resolution_from_dip_returns_high_resolution(model, scheduler, clean):
    op = SuperResolution(2)
    y = op.degrade(clean)
    r = DIPInitializedSampler(
        model, scheduler, SamplerConfig(t0=20, steps=2), dip=DIP, progress=False
    )(y, op)
    assert r.image.shape == clean.shape and r.dip_image.shape == clean.shape
    baseline = DIPBaseline(DIP, progress=False)(y, op)
    assert baseline.image.shape == clean.shape


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_result_different_seed_differs(model, scheduler, noisy):
    op, y = noisy
    sampler = DIPInitializedSampler(
        model,
        scheduler,
        SamplerConfig(t0=100, steps=3, eta=1.0),
        dip=DIP.replace(iterations=4),
        progress=False,
    )
    a, b, c = sampler(y, op, seed=11), sampler(y, op, seed=11), sampler(y, op, seed=12)
    assert torch.equal(a.image, b.image) and torch.equal(a.dip_image, b.dip_image)
    assert not torch.equal(a.image, c.image) and not torch.equal(a.dip_image, c.dip_image)


def test_batched_observation_keeps_rank(model, scheduler, noisy):
    op, y = noisy
    r = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init="observation", steps=2), progress=False
    )(y[None], op)
    assert r.image.shape == (1, 3, 16, 16) and r.t0 == [r.t0[0]] and r.nfe == [2]


@pytest.mark.parametrize("init", ["dip", "observation", "noise"])
def test_batch_of_two_equals_two_single_calls(model, scheduler, clean, init):
    """Image i of a batch uses seed + i; a per-image operator (mask) and t0 are allowed."""
    other = _smooth_image(seed=5)
    ops = [Inpaint(random_pixel_mask((16, 16), keep, torch.Generator().manual_seed(1)))
           for keep in (0.5, 0.7)]
    ys = torch.stack([ops[0](clean), ops[1](other)])
    sampler = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init=init, steps=4, eta=0.7), dip=DIP, progress=False
    )
    batch = sampler(ys, ops, seed=3)
    singles = [sampler(ys[i], ops[i], seed=3 + i) for i in range(2)]
    assert batch.image.shape == (2, 3, 16, 16)
    for i, single in enumerate(singles):
        # batched convolutions round differently; another seed would differ by ~0.1
        torch.testing.assert_close(batch.image[i], single.image, atol=1e-4, rtol=0)
        assert batch.t0[i] == single.t0 and batch.nfe[i] == single.nfe
        assert batch.timesteps[i] == single.timesteps
        if init == "dip":
            torch.testing.assert_close(batch.dip_image[i], single.dip_image)


def test_batch_with_different_t0_runs_each_chain(model, scheduler, clean, dip_image):
    op = Denoise(SIGMA)
    ys = torch.stack([op.degrade(clean, torch.Generator().manual_seed(i)) for i in range(2)])
    dips = torch.stack([dip_image, clean])  # the second start is much better: lower auto t0
    r = DIPInitializedSampler(model, scheduler, SamplerConfig(steps=50), progress=False)(
        ys, op, seed=0, dip_image=dips)
    assert r.t0[0] != r.t0[1] and r.nfe == [min(50, t + 1) for t in r.t0]


def test_generator_gives_the_same_image(model, scheduler, noisy):
    op, y = noisy
    sampler = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init="observation", steps=3, eta=1.0), progress=False
    )
    a = sampler(y, op, generator=torch.Generator().manual_seed(7))
    b = sampler(y, op, generator=torch.Generator().manual_seed(7))
    c = sampler(y, op, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    with pytest.raises(TypeError, match="generator"):
        sampler(y, op, generator=7)


def test_bf16_model_runs(scheduler, noisy, make_unet):
    net = make_unet(perturb=0.05).to(torch.bfloat16)
    op, y = noisy
    r = DIPInitializedSampler(
        net, scheduler, SamplerConfig(init="observation", steps=2), progress=False
    )(y, op)
    assert r.image.dtype == torch.float32 and torch.isfinite(r.image).all()


def test_nan_model_output_names_the_timestep(scheduler, noisy):
    op, y = noisy
    sampler = DIPInitializedSampler(
        lambda x, t: torch.full_like(x, float("nan")),
        scheduler,
        SamplerConfig(init="observation", t0=40, steps=2),
        progress=False,
    )
    with pytest.raises(FloatingPointError, match="timestep 40"):
        sampler(y, op)


def test_one_steps_rule_for_fixed_and_auto_t0(model, scheduler, noisy, dip_image):
    """A chain from t0 runs min(steps, t0 + 1) steps, whether t0 is fixed or automatic."""
    op, y = noisy
    fixed = DIPInitializedSampler(model, scheduler, SamplerConfig(t0=4, steps=50), progress=False)(
        y, op, dip_image=dip_image)
    assert fixed.nfe == 5 and fixed.timesteps == [4, 3, 2, 1, 0]
    assert SamplerConfig(steps=50).steps_from(4) == 5


def test_sampler_config_is_passed_whole(model, scheduler):
    config = SamplerConfig(steps=7, eta=0.3, t0=40)
    sampler = DIPInitializedSampler(model, scheduler, config, lam=2.0)
    assert sampler.config == config.replace(lam=2.0)
    assert config.lam == SamplerConfig().lam  # frozen: the original is untouched
    with pytest.raises(TypeError, match="SamplerConfig"):
        DIPInitializedSampler(model, scheduler, stepz=3)
    with pytest.raises(ValueError, match="eta"):
        config.replace(eta=-1)


def test_model_mode_restored(scheduler, noisy):
    op, y = noisy
    net = UNet(base_channels=8, channel_mults=(1,), num_res_blocks=1).train()
    DIPInitializedSampler(
        net, scheduler, SamplerConfig(init="observation", steps=1), progress=False
    )(y, op)
    assert net.training


# ----------------------------------------------------------------------------- scales, auto


def test_scale_conversions():
    x = torch.rand(3, 8, 8)
    mask = random_pixel_mask((8, 8), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    torch.testing.assert_close(observation_to_model_scale(op(x), op), mask * (2 * x - 1))
    torch.testing.assert_close(observation_to_model_scale(x, Denoise(0.1)), 2 * x - 1)
    torch.testing.assert_close(to_image_scale(to_model_scale(x)), x)
    assert float(to_image_scale(torch.tensor([-3.0, 3.0])).min()) == 0.0


def test_estimate_error_std_recovers_white_error():
    clean = _smooth_image(64, seed=3)
    g = torch.Generator().manual_seed(0)
    op = Denoise(0.1)
    y = op.degrade(clean, g)
    for e in (0.02, 0.05, 0.1):
        estimate = clean + e * torch.randn(clean.shape, generator=g)
        assert estimate_error_std(estimate, y, op) == pytest.approx(e, rel=0.15)
    # an exact fit of the noise (the estimate is y): its error is the noise itself
    assert estimate_error_std(y, y, op) == pytest.approx(0.1, rel=0.15)


def test_estimate_error_std_sees_missing_pixels():
    clean = _smooth_image(64, seed=4)
    mask = random_pixel_mask((64, 64), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    y = op.degrade(clean)
    assert estimate_error_std(clean, y, op) < 0.01
    holes = clean * mask  # missing pixels left black: a large, pixel-scale error
    assert estimate_error_std(holes, y, op) > 0.1


def test_auto_t0_uses_noise_level_on_model_scale(scheduler):
    for e in (0.01, 0.05, 0.2):
        t = auto_t0(scheduler, e)
        assert t == scheduler.timestep_for_noise_level(2 * e)
        assert math.isclose(scheduler.noise_level(t), 2 * e, rel_tol=0.1)


# ----------------------------------------------------------------------------- baselines


def test_cbm3d_baseline_needs_bm3d(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(ImportError, match=r"pip install dipprior\[bm3d\]"):
        CBM3DBaseline()


def test_cbm3d_baseline_denoises_only(clean):
    if "bm3d" not in sys.modules:
        try:
            import bm3d  # noqa: F401
        except ImportError:
            with pytest.raises(ImportError):
                CBM3DBaseline()
            return
    mask = random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0))
    op = Inpaint(mask)
    with pytest.raises(ValueError, match="operator"):
        CBM3DBaseline()(op.degrade(clean), op)


# ----------------------------------------------------------------------------- errors


def test_bad_arguments(model, scheduler):
    with pytest.raises(ValueError, match="init"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(init="pinv"), )
    with pytest.raises(ValueError, match="guidance"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(guidance="dps"), )
    with pytest.raises(ValueError, match="steps"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(steps=0), )
    with pytest.raises(ValueError, match="t0"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(t0=1000), )
    with pytest.raises(ValueError, match="t0"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(t0="best"), )
    with pytest.raises(ValueError, match="t0"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(init="noise", t0=100), )
    with pytest.raises(ValueError, match="eta"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(eta=-1), )
    with pytest.raises(ValueError, match="lam"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(lam=0), )
    with pytest.raises(TypeError, match="lam = 4 \\* guidance_scale"):
        DIPInitializedSampler(model, scheduler, guidance_scale=10)
    with pytest.raises(TypeError, match="lam = 4 \\* guidance_scale"):
        SamplerConfig(steps=3, guidance_scale=10)
    with pytest.raises(TypeError, match="lam = 4 \\* guidance_scale"):
        SamplerConfig().replace(guidance_scale=10)
    # the wrapper keeps the fields' signature (docs, IDEs)
    assert "lam" in inspect.signature(SamplerConfig).parameters
    with pytest.raises(ValueError, match="zeta"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(zeta=1.5), )
    with pytest.raises(ValueError, match="zeta"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(zeta=0.2, eta=0.5), )
    with pytest.raises(ValueError, match="spacing"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(spacing="log"), )
    with pytest.raises(ValueError, match="error_estimate"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(error_estimate="oracle"), )
    with pytest.raises(TypeError, match="model"):
        DIPInitializedSampler("unet", scheduler)
    with pytest.raises(TypeError, match="scheduler"):
        DIPInitializedSampler(model, object())


def test_bad_observations(model, scheduler, clean):
    sampler = DIPInitializedSampler(model, scheduler, SamplerConfig(init="observation", steps=1),
                                    progress=False)
    op = Inpaint(torch.ones(16, 16))
    with pytest.raises(ValueError, match="observation"):
        sampler(torch.rand(3, 8, 8), op)  # mask 16x16 vs observation 8x8
    with pytest.raises(ValueError, match="observation"):
        sampler(clean * 255, Denoise(0.1))
    with pytest.raises(ValueError, match="observation"):
        sampler(torch.rand(0, 3, 16, 16), Denoise(0.1))
    with pytest.raises(ValueError, match="operator"):
        sampler(torch.rand(2, 3, 16, 16), [Denoise(0.1)] * 3)
    with pytest.raises(ValueError, match="observation"):
        sampler(torch.rand(1, 16, 16), Denoise(0.1))
    with pytest.raises(ValueError, match="observation"):
        sampler(torch.full((3, 16, 16), float("nan")), Denoise(0.1))
    with pytest.raises(TypeError, match="operator"):
        sampler(clean, lambda x: x)
    with pytest.raises(ValueError, match="dip_image"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(t0=10, steps=1), progress=False)(
            clean, Denoise(0.1), dip_image=torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="dip_image"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(t0=10, steps=1), progress=False)(
            clean, Denoise(0.1), dip_image=torch.full((3, 16, 16), float("nan")))


# ----------------------------------------------------------------------------- diffusers


def test_diffusers_unet_in_one_line(scheduler, noisy):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    op, y = noisy
    sampler = DIPInitializedSampler(
        lambda x, t: unet(x, t).sample,
        scheduler,
        SamplerConfig(init="observation", steps=3),
        progress=False,
    )
    r = sampler(y, op, seed=0)
    assert r.nfe == 3 and r.image.shape == y.shape
    assert torch.isfinite(r.image).all()
    # the model passed as-is: its output object is unwrapped, same numbers
    as_is = DIPInitializedSampler(unet, scheduler, sampler.config, progress=False)(y, op, seed=0)
    assert torch.equal(as_is.image, r.image)


# ----------------------------------------------------------------------------- auto init, defaults


def test_auto_init_starts_denoising_from_the_observation_and_the_rest_from_classical(
        model, scheduler, noisy, clean):
    from dipprior.pipeline.tasks import resolve_init

    op, y = noisy
    auto = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init="auto", steps=2), progress=False
    )
    obs = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init="observation", steps=2), progress=False
    )
    torch.testing.assert_close(auto(y, op, seed=3).image, obs(y, op, seed=3).image,
                               rtol=0, atol=0)
    mask = random_pixel_mask((16, 16), 0.5, torch.Generator().manual_seed(0))
    inp = Inpaint(mask)
    yi = inp.degrade(clean)
    classical = DIPInitializedSampler(model, scheduler, SamplerConfig(init="classical", steps=2),
                                      progress=False)
    torch.testing.assert_close(auto(yi, inp, seed=3).image, classical(yi, inp, seed=3).image,
                               rtol=0, atol=0)
    assert resolve_init([Denoise(0.1)]) == "observation"
    assert resolve_init([Denoise(0.0), inp]) == "classical"  # no noise: nothing to denoise
    with pytest.raises(ValueError, match="one kind of task"):
        resolve_init([Denoise(0.1), inp])


def test_default_dip_stage_per_task():
    from dipprior.pipeline.presets import DIP_BUDGET
    from dipprior.pipeline.tasks import default_dip_config

    noisy_cfg = default_dip_config(Denoise(0.1))
    assert noisy_cfg.early_stopping == "reference" and noisy_cfg.iterations == 2000
    free = default_dip_config(SuperResolution(2))
    assert free.early_stopping is None and free.iterations == DIP_BUDGET


def test_reference_stopping_inside_the_sampler_uses_the_priors_restoration(model, scheduler,
                                                                          noisy, monkeypatch):
    """The DIP fit gets the observation chain's image as its reference, never the clean one."""
    op, y = noisy
    seen = {}
    import dipprior.pipeline.sampler as sampler_module

    real_fit = sampler_module.fit_dip

    def spy(*a, **k):
        seen["reference"] = k.get("reference")
        return real_fit(*a, **k)

    sampler = DIPInitializedSampler(model, scheduler, SamplerConfig(steps=2), progress=False,
                                    dip=DIPConfig(iterations=20, channels=8, depth=3,
                                                  early_stopping="reference",
                                                  reference_patience=5, progress=False))
    monkeypatch.setattr(sampler_module, "fit_dip", spy)
    r = sampler(y, op, seed=1)
    obs = DIPInitializedSampler(model, scheduler, SamplerConfig(init="observation", steps=2),
                                progress=False)(y, op, seed=1)
    torch.testing.assert_close(seen["reference"], obs.image, rtol=0, atol=0)
    assert r.nfe == len(r.timesteps) + obs.nfe  # the reference chain's evaluations count


def test_the_presets_are_what_the_docs_say():
    """docs/pipeline.md's presets table and default DIP stage against the code."""
    import dataclasses
    from pathlib import Path

    from dipprior.pipeline.presets import DIP_BUDGET, method_configs

    text = (Path(__file__).resolve().parents[1] / "docs" / "pipeline.md").read_text()
    assert f"a fixed budget of {DIP_BUDGET} iterations" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:6]]
            for line in text.splitlines() if line.startswith("| `denoise`")
            or line.startswith("| `inpaint`")}
    assert len(rows) == 2
    base = SamplerConfig()
    for label, cells in rows.items():
        task = "denoise" if label.startswith("`denoise`") else "inpaint"
        configs = method_configs(task)
        for cell, method in zip(cells, ("DDPM", "Observation->DDPM", "DIP->DDPM",
                                        "Classical->DDPM"), strict=True):
            config = configs[method]
            for f in dataclasses.fields(config):
                value = getattr(config, f.name)
                if value == getattr(base, f.name) or (f.name == "lam" and task != "denoise"):
                    continue
                if f.name == "steps":
                    expected = f"{value} step" + ("s" if value > 1 else "")
                elif isinstance(value, str):
                    expected = f'{f.name}="{value}"'
                else:
                    expected = f"{f.name}={value:g}" if isinstance(value, float) \
                        else f"{f.name}={value}"
                assert expected in cell, (task, method, expected, cell)


def test_no_config_runs_the_recommended_preset_of_each_task(model, scheduler, noisy, clean,
                                                           dip_image):
    from dipprior.pipeline.presets import method_configs, recommended_config

    op, y = noisy
    plain = DIPInitializedSampler(model, scheduler, progress=False)
    assert recommended_config(op) == method_configs("denoise")["Observation->DDPM"]
    r = plain(y, op, seed=2)
    expected = DIPInitializedSampler(model, scheduler, recommended_config(op),
                                     progress=False)(y, op, seed=2)
    torch.testing.assert_close(r.image, expected.image, rtol=0, atol=0)
    assert r.nfe == 1 and r.dip_image is None
    sr = SuperResolution(2)
    ys = sr.degrade(clean)
    assert recommended_config(sr) == method_configs("sr")["Classical->DDPM"].replace(samples=4)
    r = plain(ys, sr, seed=2)
    expected = DIPInitializedSampler(model, scheduler, recommended_config(sr),
                                     progress=False)(ys, sr, seed=2)
    torch.testing.assert_close(r.image, expected.image, rtol=0, atol=0)
    assert r.dip_image is None and r.seconds["dip"] == 0
    # a config or a keyword means the user's settings, not the preset
    assert not DIPInitializedSampler(model, scheduler, SamplerConfig(steps=3), ).recommended


def test_reference_error_estimate_and_spacing_reach_the_chain(model, scheduler, noisy,
                                                             dip_image):
    """error_estimate="reference": the RMS distance of the DIP image to the observation chain's
    image; spacing="quadratic": the chain runs the scheduler's quadratic timesteps."""
    from dipprior.pipeline.start import reference_error_std

    op, y = noisy
    assert reference_error_std(torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5)) == 0.5
    config = SamplerConfig(t0=200, steps=4, spacing="quadratic", error_estimate="reference",
                           renoise="missing")
    r = DIPInitializedSampler(model, scheduler, config, progress=False)(y, op, seed=1,
                                                                       dip_image=dip_image)
    reference = DIPInitializedSampler(model, scheduler, config.replace(
        init="observation", error_estimate="residual"), progress=False)(y, op, seed=1)
    assert r.error_std == pytest.approx(reference_error_std(dip_image, reference.image))
    assert r.timesteps == scheduler.timesteps(4, start=200, spacing="quadratic").tolist()
    assert r.nfe == len(r.timesteps) + reference.nfe
