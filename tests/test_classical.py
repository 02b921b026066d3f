"""Classical starts and peers: biharmonic, bicubic, callable starts, and their t0 rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipprior._tensor import to_model_scale
from dipprior.diffusion import Scheduler
from dipprior.operators import (
    CLASSICAL_T0,
    Denoise,
    Inpaint,
    SuperResolution,
    bicubic,
    biharmonic,
    center_box_mask,
    classical_start,
    hole_scale,
    random_pixel_mask,
)
from dipprior.pipeline import ClassicalBaseline, DIPInitializedSampler, SamplerConfig
from dipprior.pipeline.inputs import noise_seed
from dipprior.pipeline.start import classical_t0


def _photo(size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 5, 5, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                           align_corners=False)[0].clamp(0, 1)


def test_the_biharmonic_start_is_scikit_images_output():
    from skimage.restoration import inpaint_biharmonic

    clean = _photo()
    op = Inpaint(random_pixel_mask((24, 24), 0.5, torch.Generator().manual_seed(1)))
    y = op.degrade(clean)
    expected = inpaint_biharmonic(y.permute(1, 2, 0).double().numpy(),
                                  op.mask[0].numpy() == 0, channel_axis=-1)
    out = classical_start(y, op)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    known = op.mask.expand_as(y) == 1
    torch.testing.assert_close(out[known], y[known])  # the observed pixels are kept


def test_biharmonic_with_a_mask_per_channel_fills_each_channel_on_its_own():
    from skimage.restoration import inpaint_biharmonic

    clean = _photo()
    g = torch.Generator().manual_seed(2)
    mask = torch.stack([random_pixel_mask((24, 24), 0.6, g) for _ in range(3)])
    op = Inpaint(mask)
    out = biharmonic(op.degrade(clean), op)
    for c in range(3):
        expected = inpaint_biharmonic(op.degrade(clean)[c].double().numpy(),
                                      mask[c].numpy() == 0)
        np.testing.assert_allclose(out[c].numpy(), expected, atol=1e-6)


def test_bicubic_reproduces_a_linear_ramp_inside_the_image():
    """Cubic convolution interpolates linear functions exactly away from the borders: the
    high-resolution pixel j sits at low-resolution coordinate (j + 0.5) / f - 0.5."""
    f, n = 4, 12
    low = torch.arange(n, dtype=torch.float32) / n
    y = (low[None, None, :] + 0.5 * low[None, :, None]).expand(3, n, n).contiguous()
    out = bicubic(y, SuperResolution(f))
    assert out.shape == (3, n * f, n * f)
    coords = (torch.arange(n * f) + 0.5) / f - 0.5
    expected = coords[None, :] / n + 0.5 * coords[:, None] / n
    inner = slice(2 * f, (n - 2) * f)
    torch.testing.assert_close(out[0, inner, inner], expected[inner, inner], atol=1e-5, rtol=0)


def test_classical_start_per_operator_and_bad_input():
    clean = _photo()
    den = Denoise(0.1)
    y = den.degrade(clean, torch.Generator().manual_seed(0))
    torch.testing.assert_close(classical_start(y, den), y)  # the observation itself
    with pytest.raises(TypeError, match="operator"):
        biharmonic(y, den)
    with pytest.raises(TypeError, match="operator"):
        bicubic(y, den)
    with pytest.raises(ValueError, match="observation"):
        classical_start(y[None], Inpaint(torch.ones(24, 24)))


def test_hole_scale_and_the_classical_t0_rule():
    """A synthetic case: scattered pixels get the small anchor, a big box the large one, and
    holes in between a t0 in between that grows with the hole."""
    (_, t_small), (_, t_large) = CLASSICAL_T0["holes"]
    assert hole_scale(torch.ones(8, 8)) == 0.0
    one = torch.ones(5, 5)
    one[2, 2] = 0
    assert hole_scale(one) == 1.0  # a lone missing pixel is 1 pixel from a known one
    scattered = Inpaint(random_pixel_mask((128, 128), 0.5, torch.Generator().manual_seed(0)))
    assert classical_t0(scattered) == t_small
    assert classical_t0(Inpaint(center_box_mask((128, 128), 32))) == t_large
    t0s = [classical_t0(Inpaint(center_box_mask((128, 128), b))) for b in (4, 8, 16, 24, 64)]
    assert t0s == sorted(t0s) and t_small <= t0s[0] and t0s[-1] == t_large
    assert t_small < t0s[2] < t_large
    assert classical_t0(SuperResolution(4)) == CLASSICAL_T0["other"]
    assert classical_t0(SuperResolution(4), num_train_timesteps=100) == round(
        CLASSICAL_T0["other"] / 10)


class Recording:
    """A model that records its inputs and predicts zero noise."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x, t):
        self.inputs.append(x.clone())
        return torch.zeros_like(x)


def test_a_callable_start_is_used_as_given_and_classical_is_the_same_as_biharmonic():
    scheduler = Scheduler()
    clean = _photo()
    op = Inpaint(center_box_mask((24, 24), 8))
    y = op.degrade(clean)
    seen = {}
    own = torch.full((3, 24, 24), 0.3)

    def start(observation, operator):
        seen["args"] = (observation, operator)
        return own

    model = Recording()
    r = DIPInitializedSampler(model, scheduler, SamplerConfig(init=start, steps=2, zeta=1.0),
                              progress=False)(y, op, seed=5)
    assert seen["args"][1] is op and torch.equal(seen["args"][0], y)
    assert r.t0 == classical_t0(op) and r.dip_image is None and r.nfe == 2
    noise = torch.randn((1, 3, 24, 24), generator=torch.Generator().manual_seed(noise_seed(5)))
    expected = scheduler.add_noise(to_model_scale(own)[None], noise, r.t0)
    torch.testing.assert_close(model.inputs[0], expected)

    a = DIPInitializedSampler(
        Recording(), scheduler, SamplerConfig(init="classical", steps=2, zeta=1.0), progress=False
    )(y, op, seed=5)
    b = DIPInitializedSampler(
        Recording(), scheduler, SamplerConfig(init=biharmonic, steps=2, zeta=1.0), progress=False
    )(y, op, seed=5)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    assert a.seconds["dip"] == 0 and a.dip_image is None


def test_a_callable_start_of_the_wrong_shape_is_refused():
    op = Inpaint(torch.ones(16, 16))
    y = op.degrade(_photo(16))
    sampler = DIPInitializedSampler(
        Recording(),
        Scheduler(),
        SamplerConfig(init=lambda y, op: y[:, :8], steps=1),
        progress=False,
    )
    with pytest.raises(ValueError, match="init"):
        sampler(y, op)


@pytest.mark.parametrize("start, error, match", [
    # a 0..255 image was used as is: 16 dB instead of 31 (#30)
    (lambda y, op: y * 255, ValueError, r"init: values span .*0..255"),
    (lambda y, op: y.numpy(), TypeError,
     r"init: .* got a numpy array of dtype float32; convert it with torch.from_numpy"),
    (lambda y, op: (y * 255).to(torch.uint8), TypeError, "init: .* got dtype torch.uint8"),
    (lambda y, op: torch.full_like(y, float("nan")), ValueError, "init: contains NaN"),
    (lambda y, op: None, TypeError, "init: .* got NoneType"),
])
def test_a_callable_start_is_checked_as_dip_image_is(start, error, match):
    op = Inpaint(torch.ones(16, 16))
    y = op.degrade(_photo(16))
    model = Recording()
    sampler = DIPInitializedSampler(model, Scheduler(), init=start, steps=1, progress=False)
    with pytest.raises(error, match=match):
        sampler(y, op)
    assert not model.inputs  # refused before the chain


def test_init_rejects_what_is_neither_a_name_nor_a_callable():
    from dipprior.pipeline import SamplerConfig

    with pytest.raises(ValueError, match="init"):
        SamplerConfig(init="bilinear")
    with pytest.raises(ValueError, match="init"):
        SamplerConfig(init=3)


def test_the_classical_peer_is_clamped_and_refuses_denoising():
    op = SuperResolution(2)
    y = op.degrade(_photo())
    r = ClassicalBaseline()(y, op)
    torch.testing.assert_close(r.image, bicubic(y, op).clamp(0, 1))
    assert r.nfe == 0
    with pytest.raises(ValueError, match="CBM3D"):
        ClassicalBaseline()(y, Denoise(0.1))


# ----------------------------------------------------------------------------- the budget


def test_budget_config_picks_the_best_point_that_fits():
    from dipprior.pipeline.presets import EFFORTS, FRONT, budget_config

    holes = Inpaint(torch.ones(8, 8))
    front = FRONT["noise-free"]
    assert [e for e, _, _ in front] == list(EFFORTS)
    seconds = [s for _, s, _ in front]
    assert seconds == sorted(seconds)
    for effort, _, config in front:
        assert budget_config(holes, effort) == config
    assert budget_config(holes, 1e-3) == front[0][2]  # nothing fits: the cheapest
    assert budget_config(holes, 1e6) == front[-1][2]
    assert budget_config(holes, seconds[1]) == front[1][2]
    # four times the pixels, four times the seconds
    assert budget_config(holes, seconds[1], pixels=4 * 128 * 128) == front[0][2]
    assert budget_config(holes, 4 * seconds[1], pixels=4 * 128 * 128) == front[1][2]
    assert budget_config(Denoise(0.1), "best") == FRONT["denoise"][-1][2]
    for bad in ("quick", 0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="budget"):
            budget_config(holes, bad)


def test_the_sampler_runs_the_budgets_point_and_refuses_a_budget_with_settings():
    from dipprior.pipeline.presets import budget_config

    scheduler = Scheduler()
    op = Inpaint(center_box_mask((24, 24), 8))
    y = op.degrade(_photo())
    fast = DIPInitializedSampler(Recording(), scheduler, budget="fast",
                                 progress=False)(y, op, seed=1)
    same = DIPInitializedSampler(Recording(), scheduler, budget_config(op, "fast"),
                                 progress=False)(y, op, seed=1)
    torch.testing.assert_close(fast.image, same.image, rtol=0, atol=0)
    assert fast.nfe == budget_config(op, "fast").steps
    with pytest.raises(ValueError, match="budget"):
        DIPInitializedSampler(Recording(), scheduler, steps=3, budget="fast")
    with pytest.raises(ValueError, match="budget"):
        DIPInitializedSampler(Recording(), scheduler, budget="soon")


def test_restore_budget_option(tmp_path, capsys, make_unet):
    from dipprior.cli import main
    from dipprior.diffusion import save
    from dipprior.io import sample_image, save_image

    model = str(save(make_unet(), Scheduler(), tmp_path / "m"))
    save_image(sample_image("chelsea", 16), tmp_path / "c.png")
    base = ["restore", str(tmp_path / "c.png"), "--task", "inpaint", "--simulate",
            "--model", model, "--no-progress"]
    assert main([*base, "--budget", "fast", "--out", str(tmp_path / "o.png")]) == 0
    assert "NFE=10" in capsys.readouterr().out
    assert main([*base, "--budget", "fast", "--steps", "3", "--out", str(tmp_path / "p.png")]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main([*base, "--budget", "soon", "--out", str(tmp_path / "q.png")]) == 2
    assert "--budget" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "q.png").exists()


def test_the_budget_rule_is_the_docs_table():
    """docs/results.md's "Which method for which task and budget" table is FRONT."""
    import re
    from pathlib import Path

    from dipprior.pipeline.presets import FRONT

    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    section = text.split("### Which method for which task and budget", 1)[1].split("\n#", 1)[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if any(line.startswith(f"| {task} |") for task in FRONT)]
    assert len(rows) == sum(len(points) for points in FRONT.values())
    for task, effort_cell, seconds_cell, runs, *_ in rows:
        effort = re.fullmatch(r"`(\w+)`", effort_cell).group(1)
        _, seconds, config = next(p for p in FRONT[task] if p[0] == effort)
        assert seconds_cell == f"{seconds:g}", (task, effort)
        assert f'init="{config.init}"' in runs, runs
        assert re.search(rf"(^|\D){config.steps} steps?\b", runs), runs
        assert (f"mean of {config.samples}" in runs) == (config.samples > 1), runs
        assert (f"ensemble {config.ensemble}" in runs) == (config.ensemble > 1), runs
        adapt = config.adapt
        assert ("adapted" in runs) == (adapt is not None), runs
        if adapt is not None:
            assert f"{adapt.iterations} iterations" in runs, runs
            assert (f"every {adapt.every}" in runs) == (adapt.every > 1), runs


def test_the_budgets_run_what_the_front_says_and_each_point_costs_more():
    from dipprior.operators import Blur, gaussian_kernel
    from dipprior.pipeline.presets import EFFORTS, FRONT, budget_config, front_for

    blur = Blur(gaussian_kernel(3, 1.0), 0.01)
    for op in (Denoise(0.1), Inpaint(torch.ones(8, 8)), blur):
        front = front_for(op)
        assert [e for e, _, _ in front] == list(EFFORTS)
        assert [s for _, s, _ in front] == sorted(s for _, s, _ in front)
        for effort, _, config in front:
            assert budget_config(op, effort).replace(lam=config.lam, zeta=config.zeta) == config
    assert front_for(Denoise(0.1)) is FRONT["denoise"]
    assert front_for(Inpaint(torch.ones(8, 8))) is FRONT["noise-free"]
    assert front_for(blur) is FRONT["deblur"] and front_for(blur)[-1][2].adapt is not None
    assert budget_config(blur, "best").lam == 3.0  # deblurring's own data weight
    assert front_for(Denoise(0.0)) is FRONT["noise-free"]  # noise-free: no denoising front


def test_a_best_budget_that_adapts_needs_a_prior_that_can_adapt():
    from dipprior.operators import Blur, gaussian_kernel

    def callable_prior(x, t):
        return torch.zeros_like(x)

    sampler = DIPInitializedSampler(callable_prior, Scheduler(), budget="best", progress=False)
    for op in (Denoise(0.1), Blur(gaussian_kernel(3, 1.0), 0.01)):
        with pytest.raises(ValueError, match="budget: 'best' adapts the prior"):
            sampler.plan(torch.rand(3, 8, 8), op)
    holes = Inpaint(torch.ones(8, 8))
    assert sampler.plan(torch.rand(3, 8, 8), holes)[0].config.adapt is None  # no adapting


def test_samples_average_chains_of_their_own_noise(model):
    """samples=k: k chains per image from the same start, averaged; chain 0 is the one-sample
    chain, the others draw noise of their own; a batch equals single calls."""
    scheduler = Scheduler()
    op = Inpaint(center_box_mask((16, 16), 6))
    clean = _photo(16)
    y = op.degrade(clean)
    config = {"init": "classical", "steps": 3, "zeta": 1.0, "t0": 80}
    one = DIPInitializedSampler(model, scheduler, progress=False, **config)(y, op, seed=4)
    two = DIPInitializedSampler(model, scheduler, progress=False, samples=2, **config)
    r = two(y, op, seed=4)
    assert r.nfe == 2 * one.nfe == 6
    other = 2 * r.image - one.image  # the second chain's image
    assert float((other - one.image).abs().max()) > 1e-3
    assert -1e-5 <= float(other.min()) and float(other.max()) <= 1 + 1e-5
    torch.testing.assert_close(two(y, op, seed=4).image, r.image, rtol=0, atol=0)
    batch = two(torch.stack([y, y]), op, seed=4)
    torch.testing.assert_close(batch.image[0], r.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.image[1], two(y, op, seed=5).image, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="samples"):
        DIPInitializedSampler(model, scheduler, SamplerConfig(samples=0), )


def test_a_numeric_budget_scales_with_the_restored_images_pixels():
    """Super-resolution: the budget is per restored (high-resolution) image."""
    from dipprior.pipeline.presets import FRONT

    scheduler = Scheduler()
    (_, fast, _), (_, balanced, _), _ = FRONT["noise-free"]
    op = SuperResolution(2)
    y = op.degrade(_photo(256))  # a 128x128 observation of a 256x256 image: 4 x 128^2 pixels
    r = DIPInitializedSampler(Recording(), scheduler, budget=balanced * 2,
                              progress=False)(y, op, seed=0)
    assert r.nfe == FRONT["noise-free"][0][2].steps  # only "fast" fits 4x the pixels
    r = DIPInitializedSampler(Recording(), scheduler, budget=balanced * 4,
                              progress=False)(y, op, seed=0)
    assert r.nfe == FRONT["noise-free"][1][2].steps
    with pytest.raises(ValueError, match="one kind of task"):
        DIPInitializedSampler(Recording(), scheduler, budget="fast")(
            torch.stack([y, y]), [op, Denoise(0.1)])


def test_dip_observation_is_ignored_without_a_start_and_used_on_a_classical_one(model):
    scheduler = Scheduler()
    op = Inpaint(center_box_mask((16, 16), 6))
    y = op.degrade(_photo(16))
    noise = DIPInitializedSampler(
        model, scheduler, SamplerConfig(init="noise", steps=2, dip_observation=True), progress=False
    )(y, op, seed=0)
    plain = DIPInitializedSampler(model, scheduler, SamplerConfig(init="noise", steps=2),
                                  progress=False)(y, op, seed=0)
    torch.testing.assert_close(noise.image, plain.image, rtol=0, atol=0)
    dip_image = torch.full((3, 16, 16), 0.5)
    second = DIPInitializedSampler(
        model,
        scheduler,
        SamplerConfig(init="classical", t0=60, steps=2, dip_observation=True),
        progress=False,
    )
    r = second(y, op, seed=0, dip_image=dip_image)
    alone = DIPInitializedSampler(model, scheduler, SamplerConfig(init="classical", t0=60, steps=2),
                                  progress=False)(y, op, seed=0)
    assert r.dip_image is not None and r.error_std is not None
    assert float((r.image - alone.image).abs().max()) > 1e-4  # the second observation acts


def test_biharmonic_without_a_known_pixel_is_refused():
    op = Inpaint(torch.zeros(8, 8))  # was numpy's "zero-size array to reduction operation"
    with pytest.raises(ValueError, match="keeps no pixel"):
        biharmonic(torch.zeros(3, 8, 8), op)

