import math

import pytest
import torch

from dipprior.diffusion import Scheduler, sample

diffusers = pytest.importorskip("diffusers")

SCHEDULES = [
    ("linear", 1e-4, 0.02),
    ("scaled_linear", 0.00085, 0.012),
    ("cosine", 1e-4, 0.02),
]
DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear",
                  "cosine": "squaredcos_cap_v2"}
PREDICTIONS = ["epsilon", "sample", "v_prediction"]


def _ddim(schedule, start, end, prediction="epsilon", clip=True):
    return diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[schedule], beta_start=start,
        beta_end=end, prediction_type=prediction, clip_sample=clip, set_alpha_to_one=True,
        steps_offset=0, timestep_spacing="leading")


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("schedule,start,end", SCHEDULES)
def test_alphas_cumprod_match_diffusers(schedule, start, end):
    ours = Scheduler(beta_schedule=schedule, beta_start=start, beta_end=end)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[schedule],
                                  beta_start=start, beta_end=end)
    _close(ours.alphas_cumprod, ref.alphas_cumprod)
    _close(ours.betas, ref.betas)
    assert ours.betas.max() <= 0.999 + 1e-7  # float32 rounding of 0.999


def test_linear_schedule_hand_values():
    s = Scheduler()
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)))
    # float32 schedule (as diffusers): 1 - abar_0 keeps only ~4 significant digits
    assert s.noise_level(0) == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=2e-4)


def test_cosine_capped_at_0999():
    s = Scheduler(num_train_timesteps=50, beta_schedule="cosine")
    assert s.betas[-1].item() == pytest.approx(0.999)
    assert Scheduler(beta_schedule="squaredcos_cap_v2").beta_schedule == "cosine"


@pytest.mark.parametrize("schedule,start,end", SCHEDULES)
def test_add_noise_matches_diffusers(schedule, start, end):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    ours = Scheduler(beta_schedule=schedule, beta_start=start, beta_end=end)
    ref = diffusers.DDPMScheduler(beta_schedule=DIFFUSERS_NAME[schedule], beta_start=start,
                                  beta_end=end)
    _close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))
    _close(ours.get_velocity(x0, noise, t), ref.get_velocity(x0, noise, t))
    _close(ours.add_noise(x0, noise, 250), ref.add_noise(x0, noise, torch.full((4,), 250)))


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("schedule,start,end", SCHEDULES)
def test_ddim_step_matches_diffusers(prediction, clip, schedule, start, end):
    ours = Scheduler(beta_schedule=schedule, beta_start=start, beta_end=end,
                     prediction_type=prediction, clip_sample=clip)
    ref = _ddim(schedule, start, end, prediction, clip)
    ref.set_timesteps(10)  # leading spacing: 900, 800, ..., 0; diffusers steps t -> t - 100
    assert ref.timesteps.tolist() == list(range(900, -1, -100))
    g = torch.Generator().manual_seed(1)
    for t in ref.timesteps.tolist():  # includes the final step 0 -> x0 (prev_t = -100 < 0)
        x_t = torch.randn(2, 3, 6, 5, generator=g)
        out = torch.randn(2, 3, 6, 5, generator=g)
        a = ours.step(out, t, x_t, prev_t=t - 100, eta=0.0)
        b = ref.step(out, t, x_t, eta=0.0)
        _close(a.pred_original_sample, b.pred_original_sample)
        _close(a.prev_sample, b.prev_sample)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_stochastic_ddim_step_matches_diffusers_with_given_noise(prediction):
    ours = Scheduler(prediction_type=prediction)
    ref = _ddim("linear", 1e-4, 0.02, prediction)
    ref.set_timesteps(20)
    g = torch.Generator().manual_seed(2)
    x_t, out, z = (torch.randn(1, 3, 4, 4, generator=g) for _ in range(3))
    for t in (950, 500, 50):
        a = ours.step(out, t, x_t, prev_t=t - 50, eta=0.7, noise=z)
        b = ref.step(out, t, x_t, eta=0.7, variance_noise=z)
        _close(a.prev_sample, b.prev_sample)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_eta_one_is_ddpm_ancestral(prediction):
    """DDIM with eta=1 and prev_t=t-1 is DDPM's posterior sample (fixed_small variance)."""
    ours = Scheduler(prediction_type=prediction, clip_sample=False)
    ref = diffusers.DDPMScheduler(prediction_type=prediction, clip_sample=False,
                                  variance_type="fixed_small")
    abar = ours.alphas_cumprod  # float64
    g = torch.Generator().manual_seed(3)
    for t in (999, 600, 1, 0):
        x_t, out = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
        a = ours.step(out, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(t))
        b = ref.step(out, t, x_t, generator=torch.Generator().manual_seed(t))
        # float64 DDPM posterior (Ho et al. eq. 7) from our x0 estimate
        a_t, a_p = abar[t].item(), abar[t - 1].item() if t > 0 else 1.0
        beta = 1 - a_t / a_p
        x0 = a.pred_original_sample.double()
        mean = (a_p**0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - a_p) * x_t.double()) / (1 - a_t)
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t)) if t else 0
        expected = mean + ((1 - a_p) / (1 - a_t) * beta) ** 0.5 * z
        _close(a.prev_sample, expected)
        _close(a.pred_original_sample, b.pred_original_sample)
        # diffusers re-derives beta_t = 1 - abar_t / abar_{t-1} in float32, which loses ~4
        # digits at small t; hence the looser tolerance against it
        _close(a.prev_sample, b.prev_sample, tol=1e-3)


def test_final_step_returns_pred_x0_and_prev_none_is_t_minus_one():
    s = Scheduler(clip_sample=False)
    g = torch.Generator().manual_seed(4)
    x_t, eps = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g)
    out = s.step(eps, 10, x_t, prev_t=-1, eta=1.0)
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample)
    torch.testing.assert_close(s.step(eps, 10, x_t).prev_sample,
                               s.step(eps, 10, x_t, prev_t=9).prev_sample)


def test_step_from_x0_consistent_with_step_and_renoising():
    s = Scheduler(clip_sample=False)
    g = torch.Generator().manual_seed(5)
    x_t, out = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    x0, eps = s.pred_x0(out, 700, x_t), s.pred_epsilon(out, 700, x_t)
    torch.testing.assert_close(s.epsilon_from_x0(x0, 700, x_t), eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.step_from_x0(x0, eps, 700, 300),
                               s.step(out, 700, x_t, prev_t=300).prev_sample)
    # with eta=0, stepping from a clean x0 and its exact noise lands on add_noise(x0, eps, prev_t)
    clean, noise = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1, torch.randn(1, 3, 4, 4, generator=g)
    torch.testing.assert_close(s.step_from_x0(clean, noise, 800, 200),
                               s.add_noise(clean, noise, 200))
    with pytest.raises(ValueError, match="prev_t"):
        s.step_from_x0(clean, noise, 200, 200)


def test_prediction_conversions_invert_forward_process():
    g = torch.Generator().manual_seed(6)
    x0, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([5, 400, 990])
    for prediction in PREDICTIONS:
        s = Scheduler(prediction_type=prediction)
        x_t = s.add_noise(x0, noise, t)
        target = s.training_target(x0, noise, t)
        torch.testing.assert_close(s.pred_x0(target, t, x_t), x0, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(s.pred_epsilon(target, t, x_t), noise, rtol=1e-4, atol=1e-4)


def test_timesteps_subsequences():
    s = Scheduler()
    assert s.timesteps(4, start=300).tolist() == [300, 200, 100, 0]
    ts = s.timesteps(50).tolist()
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 50
    assert ts == sorted(ts, reverse=True)
    assert s.timesteps(1000).tolist() == list(range(999, -1, -1))
    assert s.timesteps(1, start=37).tolist() == [37]
    for n in (2, 7, 38):
        t = s.timesteps(n, start=37).tolist()
        assert len(t) == len(set(t)) == n and t[0] == 37 and t[-1] == 0
        gaps = [a - b for a, b in zip(t, t[1:], strict=False)]
        assert max(gaps) - min(gaps) <= 1
    with pytest.raises(ValueError, match="num_steps"):
        s.timesteps(39, start=37)
    with pytest.raises(ValueError, match="start"):
        s.timesteps(5, start=1000)
    with pytest.raises(TypeError, match="num_steps"):
        s.timesteps(2.0)


def test_noise_level_inverse():
    for schedule in ("linear", "cosine"):
        s = Scheduler(beta_schedule=schedule)
        t = torch.arange(1000)
        sig = s.noise_level(t)
        assert torch.all(sig[1:] > sig[:-1])
        assert torch.equal(s.timestep_for_noise_level(sig), t)
        assert all(s.timestep_for_noise_level(s.noise_level(i)) == i for i in (0, 1, 345, 999))
    s = Scheduler()
    assert s.timestep_for_noise_level(0.0) == 0
    assert s.timestep_for_noise_level(1e9) == 999
    # image-space sigma 25/255 on [0, 1] is 2 * 25/255 on the model's scale
    t = s.timestep_for_noise_level(2 * 25 / 255)
    assert isinstance(t, int)
    assert abs(s.noise_level(t) - 2 * 25 / 255) <= (s.noise_level(t + 1) - s.noise_level(t))
    with pytest.raises(ValueError, match="sigma"):
        s.timestep_for_noise_level(-0.1)
    with pytest.raises(ValueError, match="sigma"):
        s.timestep_for_noise_level(float("nan"))


def test_config_roundtrip_with_diffusers():
    s = Scheduler(beta_schedule="cosine", prediction_type="v_prediction", clip_sample=False)
    cfg = s.to_config()
    assert cfg["beta_schedule"] == "squaredcos_cap_v2"
    ref = diffusers.DDIMScheduler.from_config(cfg)
    _close(s.alphas_cumprod, ref.alphas_cumprod)
    assert ref.config.prediction_type == "v_prediction"
    back = Scheduler.from_config(dict(ref.config))
    assert back.to_config() == cfg
    with pytest.raises(ValueError, match="thresholding"):
        Scheduler.from_config({**cfg, "thresholding": True})


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta_schedule"):
        Scheduler(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="prediction_type"):
        Scheduler(prediction_type="score")
    with pytest.raises(ValueError, match="beta_start"):
        Scheduler(beta_start=0.1, beta_end=0.01)
    s = Scheduler()
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="t must be in"):
        s.add_noise(x, x, 1000)
    with pytest.raises(ValueError, match="shape"):
        s.add_noise(x, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise shape"):
        s.add_noise(x, x[:1], 3)
    with pytest.raises(ValueError, match="model_output shape"):
        s.step(x[:1], 3, x)


def test_sample_is_deterministic_and_in_range(make_unet):
    net = make_unet(dropout=0.1)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    s = Scheduler()
    kw = dict(shape=(2, 3, 9, 11), steps=4, eta=0.5, progress=False)
    a = sample(net, s, generator=torch.Generator().manual_seed(0), **kw)
    b = sample(net, s, generator=torch.Generator().manual_seed(0), **kw)
    c = sample(net, s, generator=torch.Generator().manual_seed(1), **kw)
    assert a.shape == (2, 3, 9, 11) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_sample_matches_manual_loop_with_a_plain_callable():
    s = Scheduler(prediction_type="sample")
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    x = sample(model, s, (1, 3, 4, 4), steps=5, generator=torch.Generator().manual_seed(0),
               progress=False)
    assert calls == s.timesteps(5).tolist()
    # predicting x0 = 0 with eta = 0 ends at exactly 0 -> 0.5 in image space
    torch.testing.assert_close(x, torch.full((1, 3, 4, 4), 0.5))


def test_sample_names_the_timestep_of_a_nan_model_output():
    def broken(x, t):
        return torch.where(t[:, None, None, None] < 500, float("nan"), 0.0) * torch.ones_like(x)

    with pytest.raises(FloatingPointError, match="timestep"):
        sample(broken, Scheduler(), (1, 3, 8, 8), steps=4, progress=False)


# ----------------------------------------------------------------------------- DiffPIR options


def test_quadratic_spacing_is_diffpirs_quad_skip():
    """DiffPIR's official code: seq = int(sqrt(linspace(0, T^2, n))), last entry minus one."""
    s = Scheduler()
    for n in (10, 20, 100):
        seq = [int(math.sqrt(v)) for v in torch.linspace(0, 1000.0 ** 2, n,
                                                        dtype=torch.float64).tolist()]
        seq[-1] -= 1
        assert s.timesteps(n, spacing="quadratic").tolist() == seq[::-1]
    # from a warm start: dense near t0, and merged where two entries round alike
    assert s.timesteps(4, start=299, spacing="quadratic").tolist() == [299, 244, 173, 0]
    ts = s.timesteps(30, start=40, spacing="quadratic").tolist()
    assert ts[0] == 40 and ts[-1] == 0 and ts == sorted(set(ts), reverse=True) and len(ts) < 30
    with pytest.raises(ValueError, match="spacing"):
        s.timesteps(4, spacing="log")


def test_zeta_step_by_hand():
    """x_prev = sqrt(abar') x0 + sqrt(1 - abar') (sqrt(1 - zeta) eps + sqrt(zeta) z)."""
    s = Scheduler()
    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(1, 3, 4, 4, generator=g) for _ in range(3))
    a = float(s.alphas_cumprod[300])
    for zeta in (0.0, 0.3, 1.0):
        out = s.step_from_x0(x0, eps, 500, 300, noise=z, zeta=zeta)
        expected = a ** 0.5 * x0 + (1 - a) ** 0.5 * ((1 - zeta) ** 0.5 * eps + zeta ** 0.5 * z)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # zeta = 0 is DDIM's eta = 0
    torch.testing.assert_close(s.step_from_x0(x0, eps, 500, 300, zeta=0.0),
                               s.step_from_x0(x0, eps, 500, 300))
    with pytest.raises(ValueError, match="zeta"):
        s.step_from_x0(x0, eps, 500, 300, zeta=1.5)
    with pytest.raises(ValueError, match="eta or zeta"):
        s.step_from_x0(x0, eps, 500, 300, zeta=0.5, eta=0.5)
