import math

import numpy as np
import pytest
import torch

from dipprior import dip
from dipprior.dip import (
    WMV,
    DIPConfig,
    ReferenceDistance,
    SkipNet,
    SpikeGuard,
    wmv_stop_point,
)
from dipprior.dip.fit import build_network, use_channels_last
from dipprior.dip.net import too_small
from dipprior.estimators import estimate_noise_sigma, haar_diagonal
from dipprior.operators import Denoise, Inpaint, SuperResolution, random_pixel_mask

TINY = dict(channels=8, depth=3, input_depth=8, progress=False, check_every=10)


def noisy(shape=(3, 24, 24), sigma=0.1, seed=0):
    """A smooth random image (bilinear upsampling of a 4x4 one) and its noisy observation."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, shape[-3], 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=shape[-2:], mode="bilinear")[0]
    return x, Denoise(sigma).degrade(x, g)


# ----------------------------------------------------------------------------- network


def reference_parameter_count(c=128, s=4, d=32, depth=5):
    """Counted by hand from the layers of the reference ``skip`` (models/skip.py)."""
    total, cin = 0, d
    for _ in range(depth):
        total += cin * s + s + 2 * s  # skip: conv1x1 + BN
        total += 9 * cin * c + c + 2 * c  # down: strided conv3x3 + BN
        total += 9 * c * c + c + 2 * c  # down: conv3x3 + BN
        total += 2 * (s + c)  # BN after the concat
        total += 9 * (s + c) * c + c + 2 * c  # up: conv3x3 + BN
        total += c * c + c + 2 * c  # up: conv1x1 + BN (need1x1_up)
        cin = c
    return total + 3 * c + 3  # final conv1x1 to RGB


def test_skipnet_matches_reference_layout():
    net = SkipNet()
    assert sum(p.numel() for p in net.parameters()) == reference_parameter_count() == 2217831
    assert sum(p.numel() for p in SkipNet(64).parameters()) == reference_parameter_count(64)
    kinds = [type(m).__name__ for m in net.body.modules()]
    assert kinds.count("LeakyReLU") == 5 * 5 and all(
        m.negative_slope == 0.2 for m in net.modules() if isinstance(m, torch.nn.LeakyReLU))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.padding_mode == "reflect" for m in convs if m.kernel_size == (3, 3))
    assert sum(m.stride == (2, 2) for m in convs) == 5


@pytest.mark.parametrize("h,w", [(17, 23), (5, 9), (32, 32), (1, 40)])
def test_skipnet_any_size(h, w):
    torch.manual_seed(0)
    net = SkipNet(channels=[4, 6, 8], depth=3, skip_channels=[2, 0, 2], input_depth=5)
    with torch.no_grad():
        out = net(torch.rand(2, 5, h, w))
    assert out.shape == (2, 3, h, w)
    assert float(out.min()) > 0 and float(out.max()) < 1  # sigmoid


def test_skipnet_errors():
    with pytest.raises(ValueError, match="channels"):
        SkipNet(channels=[8, 8], depth=3)
    with pytest.raises(ValueError, match="upsample"):
        SkipNet(upsample="bicubic")
    with pytest.raises(ValueError, match="z"):
        SkipNet(8, depth=2)(torch.rand(1, 3, 8, 8))


def test_grouped_networks_equal_single_networks():
    torch.manual_seed(0)
    nets = [SkipNet(6, depth=3, input_depth=4) for _ in range(3)]
    grouped = SkipNet.stack(nets)
    z = torch.rand(3, 4, 20, 12)
    out = grouped(z)
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i : i + 1], net(z[i : i + 1]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(grouped.unstack(i).state_dict(), net.state_dict())


# ----------------------------------------------------------------------------- fitting


def test_fit_shapes_for_each_task():
    x, y = noisy((3, 24, 24))
    assert dip.fit(y, Denoise(0.1), iterations=2, **TINY).image.shape == (3, 24, 24)
    mask = random_pixel_mask((24, 24), 0.5, torch.Generator().manual_seed(0))
    r = dip.fit(Inpaint(mask).degrade(x), Inpaint(mask), iterations=2, **TINY)
    assert r.image.shape == r.last_image.shape == (3, 24, 24)
    sr = SuperResolution(4)
    r = dip.fit(sr.degrade(x), sr, iterations=2, **TINY)
    assert r.image.shape == (3, 24, 24)  # the network output is the high-resolution image
    rs = dip.fit(torch.stack([y, y]), iterations=2, **TINY)
    assert isinstance(rs, list) and len(rs) == 2 and rs[1].image.shape == (3, 24, 24)
    assert len(rs[0].history["loss"]) == 2 and rs[0].iterations == 2


def test_fit_is_deterministic_and_seeded():
    _, y = noisy()
    a = dip.fit(y, Denoise(0.1), iterations=6, seed=3, **TINY)
    b = dip.fit(y, Denoise(0.1), iterations=6, seed=3, **TINY)
    c = dip.fit(y, Denoise(0.1), iterations=6, seed=4, **TINY)
    assert torch.equal(a.image, b.image) and a.history["loss"] == b.history["loss"]
    assert not torch.allclose(a.image, c.image)


def test_input_noise_is_independent_of_a_degradation_with_the_same_seed():
    # the natural call degrades and fits with one seed; the perturbation of z must not be the
    # observation's own noise drawn again (on the CPU, seed + 2**32 is the same stream as seed)
    x = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    y = Denoise(0.1).degrade(x, torch.Generator().manual_seed(5))
    cfg = DIPConfig(**{**TINY, "input_depth": 3}, reg_noise_std=0.5, iterations=1, seed=5)
    inputs = []

    def record(module, args):
        if isinstance(module, SkipNet):
            inputs.append(args[0].detach().clone())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        dip.fit(y, Denoise(0.1), config=cfg)
    finally:
        handle.remove()
    _, z = build_network(cfg, 5, y.shape)
    drawn = ((inputs[0] - z) / cfg.reg_noise_std).flatten()
    assert abs(float(drawn.std()) - 1) < 0.15  # the recorded input is z plus the drawn noise
    correlation = torch.nn.functional.cosine_similarity(drawn, ((y - x) / 0.1).flatten(), dim=0)
    assert abs(float(correlation)) < 0.2  # 1728 independent values: |corr| about 0.02


def test_config_and_keywords_are_the_same_thing():
    _, y = noisy()
    cfg = DIPConfig(iterations=4, lr=0.02, **TINY)
    a = dip.fit(y, config=cfg)
    b = dip.fit(y, iterations=4, lr=0.02, **TINY)
    c = dip.fit(y, config=DIPConfig(iterations=50, **TINY), iterations=4, lr=0.02)
    assert torch.equal(a.image, b.image) and torch.equal(a.image, c.image)
    assert a.config == cfg
    with pytest.raises(TypeError, match="chanels"):
        dip.fit(y, chanels=8)
    with pytest.raises(TypeError, match="iteration"):
        cfg.replace(iteration=3)
    with pytest.raises(ValueError, match="early_stopping"):
        DIPConfig(early_stopping="wvm")
    with pytest.raises(ValueError, match="ema"):
        DIPConfig(ema=1.0)


def test_reference_defaults():
    cfg = DIPConfig()
    assert (cfg.lr, cfg.iterations, cfg.ema, cfg.input_depth, cfg.depth, cfg.skip_channels) == (
        0.01, 3000, 0.99, 32, 5, 4)
    assert math.isclose(cfg.reg_noise_std, 1 / 30) and cfg.input_scale == 0.1
    net, z = dip.build_network(cfg, 0, (16, 16))
    assert z.shape == (1, 32, 16, 16) and 0 <= float(z.min()) and float(z.max()) < 0.1
    assert float(z.mean()) == pytest.approx(0.05, abs=0.002)  # U(0, 0.1)


def test_fit_loss_goes_down_and_history_is_complete():
    x, y = noisy()
    r = dip.fit(y, Denoise(0.1), iterations=30, ground_truth=x, **TINY)
    assert len(r.history["loss"]) == len(r.history["psnr"]) == len(r.history["psnr_output"]) == 30
    assert np.mean(r.history["loss"][-5:]) < 0.5 * np.mean(r.history["loss"][:5])
    err = float(((r.image - x) ** 2).mean())
    assert r.history["psnr"][-1] == pytest.approx(-10 * math.log10(err), abs=1e-3)
    assert r.best_iteration == 29 and r.stopped_at is None and r.seconds > 0


def test_ground_truth_never_steers_the_fit():
    x, y = noisy()
    kw = dict(iterations=25, early_stopping="wmv", wmv_window=5, wmv_patience=5, **TINY)
    a = dip.fit(y, Denoise(0.1), ground_truth=x, **kw)
    b = dip.fit(y, Denoise(0.1), **kw)
    assert torch.equal(a.image, b.image) and a.stopped_at == b.stopped_at


def test_clear_errors():
    _, y = noisy()
    with pytest.raises(ValueError, match="NaN"):
        dip.fit(torch.full((3, 16, 16), float("nan")), iterations=1, **TINY)
    with pytest.raises(ValueError, match="far outside"):
        dip.fit(y * 255, Denoise(0.1), iterations=1, **TINY)
    with pytest.raises(ValueError, match="mask"):
        dip.fit(y, Inpaint(torch.ones(20, 20)), iterations=1, **TINY)
    with pytest.raises(ValueError, match="ground_truth"):
        dip.fit(y, ground_truth=torch.rand(3, 8, 8), iterations=1, **TINY)
    with pytest.raises(TypeError, match="operator"):
        dip.fit(y, "denoise", iterations=1, **TINY)
    with pytest.raises(ValueError, match="observation"):
        dip.fit(torch.rand(24, 24), iterations=1, **TINY)


def test_images_too_small_for_the_network_are_refused_up_front():
    """A 1x1 (or 2x2, 3x3) image becomes constant inside the network and the fit went NaN."""
    for shape, depth in [((3, 1, 1), 3), ((3, 2, 2), 1), ((3, 3, 3), 2), ((3, 2, 3), 5)]:
        with pytest.raises(ValueError, match=rf"observation: .* {shape[1]}x{shape[2]} pixels, "
                                             rf"too small .* depth {depth}"):
            dip.fit(torch.rand(shape), iterations=1, **(TINY | {"depth": depth}))
    for shape, depth in [((3, 3, 3), 1), ((3, 1, 3), 3), ((3, 4, 4), 3)]:
        r = dip.fit(torch.rand(shape), iterations=2, **(TINY | {"depth": depth}))
        assert r.image.shape == shape
    sr = SuperResolution(4, "box")  # the network output is the high-resolution image
    assert dip.fit(torch.rand(3, 1, 1), sr, iterations=1, **TINY).image.shape == (3, 4, 4)


def test_too_small_is_where_the_network_collapses():
    """The rule agrees with the network: some BatchNorm sees constant maps exactly then."""
    torch.manual_seed(0)
    collapsed = []

    def hook(module, inputs, output):
        x = inputs[0].flatten(2)
        collapsed.append(bool((x.std(2) <= 1e-5 * x.abs().amax(2) + 1e-12).all()))

    for depth in (1, 2, 3):
        net = SkipNet(4, depth, 2, 3)
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        handles = [m.register_forward_hook(hook) for m in bns]
        for h in range(1, 6):
            for w in range(1, 6):
                collapsed.clear()
                with torch.no_grad():
                    net(torch.rand(1, 3, h, w))
                assert any(collapsed) == too_small(h, w, depth), (h, w, depth)
        for handle in handles:
            handle.remove()


def _poison(at):
    def callback(state):
        if state.iteration == at:
            with torch.no_grad():
                for p in state.net.parameters():
                    p.fill_(float("nan"))
    return callback


def test_a_diverged_fit_raises_instead_of_returning_nan():
    """After the spike recovery gave up, fit returned a NaN image."""
    _, y = noisy()
    # NaN in the first chunk: there is no good state to go back to
    with pytest.raises(FloatingPointError, match="observation: the DIP fit diverged"):
        dip.fit(y, iterations=30, callback=_poison(3), **TINY)
    with pytest.raises(FloatingPointError, match="diverged.*spike_recovery is off"):
        dip.fit(y, iterations=30, callback=_poison(15), spike_recovery=False, **TINY)
    with pytest.raises(FloatingPointError, match=r"diverged \(batch images \[0, 1\]\)"):
        dip.fit(torch.stack([y, y]), iterations=30, callback=_poison(3), **TINY)
    # later, the last good state is restored and the result stays finite
    r = dip.fit(y, iterations=30, callback=_poison(15), **TINY)
    assert r.restores == [19] and bool(torch.isfinite(r.image).all())
    assert bool(torch.isfinite(r.last_image).all())


def test_network_sizes_are_bounded_before_anything_is_built():
    """depth=40 allocated ~34 GB (inputs are padded to 2**(depth + 1) a side) before failing."""
    for kwargs, name in [
        ({"depth": 40}, r"depth: expected an int in 1\.\.10"),
        ({"depth": 11}, "depth"),
        ({"channels": 10**6}, r"channels: expected an int in 1\.\.1024"),
        ({"channels": [8, 8, 2048], "depth": 3}, "channels"),
        ({"skip_channels": 10**6}, "skip_channels"),
        ({"input_depth": 10**6}, "input_depth"),
        ({"wmv_window": 10**9}, r"wmv_window: expected an int in 2\.\.10000"),
        ({"discrepancy_window": 10**9}, "discrepancy_window"),
        ({"check_every": 10**9}, "check_every"),
    ]:
        with pytest.raises(ValueError, match=name):
            DIPConfig(**kwargs)
        with pytest.raises(ValueError, match=name):
            dip.fit(torch.rand(3, 8, 8), **(TINY | kwargs))
    with pytest.raises(ValueError, match="depth"):
        SkipNet(8, depth=40)
    DIPConfig(depth=10, channels=1024, skip_channels=[0] * 10, input_depth=1024)  # the maxima


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_fit_works_whatever_the_callers_grad_mode(context):
    """Under torch.no_grad() or torch.inference_mode() fit crashed in backward()."""
    x, y = noisy()
    plain = dip.fit(y, Denoise(0.1), iterations=4, ground_truth=x, **TINY)
    with getattr(torch, context)():
        if context == "inference_mode":  # tensors made there are inference tensors
            x, y = x.clone(), y.clone()
            assert y.is_inference()
        r = dip.fit(y, Denoise(0.1), iterations=4, ground_truth=x, **TINY)
        assert torch.is_grad_enabled() is False
        sr = SuperResolution(2)  # its kernels are cached under the caller's mode
        r_sr = dip.fit(sr.degrade(x), sr, iterations=2, **TINY)
    assert torch.equal(r.image, plain.image) and r.history == plain.history
    assert not r.image.is_inference() and not r.image.requires_grad
    assert (r.image + 1).sum() > 0  # usable outside the context
    assert r_sr.image.shape == (3, 24, 24)
    assert dip.fit(sr.degrade(x), sr, iterations=2, **TINY).image.shape == (3, 24, 24)


def test_callback_sees_every_step_and_can_stop():
    _, y = noisy()
    seen = []

    def cb(state):
        seen.append((state.iteration, state.output.shape, state.loss.shape))
        return state.iteration == 6

    r = dip.fit(y, iterations=50, callback=cb, **TINY)
    assert [s[0] for s in seen] == list(range(7)) and r.iterations == 7
    assert seen[0][1] == (1, 3, 24, 24) and seen[0][2] == (1,)
    assert len(r.history["loss"]) == 7


# ----------------------------------------------------------------------------- early stopping


def test_wmv_stop_point_by_hand():
    assert wmv_stop_point([5, 3, 2, 4, 4, 4, 1], patience=3) == (2, 5)
    assert wmv_stop_point([math.nan, 3, 2, 1], patience=2) == (3, None)
    assert wmv_stop_point([math.nan] * 3, patience=2) == (None, None)


def naive_es_wmv(frames, window, patience):
    """The ES-WMV notebook's algorithm: a list of the last W frames, per-step variance."""
    coll, best, best_t, wait, var_hist = [], math.inf, None, 0, []
    for t, f in enumerate(frames):
        coll.append(f.reshape(-1).astype(np.float64))
        if len(coll) > window:
            coll.pop(0)
        if len(coll) < window:
            var_hist.append(math.nan)
            continue
        ave = np.mean(coll, axis=0)
        var = float(np.mean([((ave - c) ** 2).sum() / c.size for c in coll]))
        var_hist.append(var)
        if var < best:
            best, best_t, wait = var, t, 0
        else:
            wait += 1
            if wait >= patience:
                return best_t, t, var_hist
    return best_t, None, var_hist


def test_wmv_stops_on_a_synthetic_variance_curve():
    """Frames jitter with an amplitude that falls then rises: stop P after the window minimum."""
    g = torch.Generator().manual_seed(0)
    steps, window, patience = 160, 12, 30
    amp = [0.2 * abs(t - 60) / 60 + 0.01 for t in range(steps)]
    base = torch.rand(2, 3, 8, 8, generator=g)
    frames = [(base + a * torch.randn(base.shape, generator=g)).clamp(0, 1) for a in amp]
    wmv = WMV(window, patience, base.shape, torch.device("cpu"))
    images = []
    for t, f in enumerate(frames):
        images.append(f * 0.5)
        wmv.update(t, f, None, images[-1])
        if wmv.poll():
            break
    for n in range(2):
        # the reference sees the same float16-rounded frames the window stores
        ref = naive_es_wmv([f[n].half().double().numpy() for f in frames], window, patience)
        assert ref[1] is not None and 40 < ref[0] < 80  # minimum near the amplitude's dip
        assert int(wmv.best_iteration[n]) == ref[0] and int(wmv.stop_iteration[n]) == ref[1]
        torch.testing.assert_close(wmv.best_image[n], images[ref[0]][n])
    assert t == max(int(wmv.stop_iteration[0]), int(wmv.stop_iteration[1]))


def test_fit_with_wmv_stops_and_returns_the_image_at_the_minimum():
    x, y = noisy(sigma=0.2)
    kw = dict(iterations=200, early_stopping="wmv", wmv_window=10, wmv_patience=15, **TINY)
    r = dip.fit(y, Denoise(0.2), ground_truth=x, **kw)
    best, stop = wmv_stop_point(r.history["variance"], 15)
    assert r.stopped_at is not None and (r.best_iteration, r.stopped_at) == (best, stop)
    assert r.iterations <= stop + 10  # stops at the next check
    full = dip.fit(y, Denoise(0.2), ground_truth=x,
                   **(kw | {"wmv_patience": 10**6, "iterations": r.iterations}))
    assert r.history["loss"] == full.history["loss"][: r.iterations]
    err = float(((r.image - x) ** 2).mean())
    assert full.history["psnr"][best] == pytest.approx(-10 * math.log10(err), abs=1e-3)


def test_reference_rule_on_a_synthetic_curve():
    """Images approach the reference, then drift away: stop P after the closest one."""
    ref = torch.zeros(2, 3, 4, 4)
    dist = [abs(t - 25) + 1.0 for t in range(60)]  # minimum at t = 25 for network 0
    dist1 = [abs(t - 10) + 1.0 for t in range(60)]  # and t = 10 for network 1
    rule = ReferenceDistance(ref, patience=7, device=torch.device("cpu"))
    images = []
    for t in range(60):
        img = torch.stack([torch.full((3, 4, 4), math.sqrt(dist[t])),
                           torch.full((3, 4, 4), math.sqrt(dist1[t]))])
        images.append(img)
        rule.update(t, img, None, img)
        if rule.poll():
            break
    assert [int(v) for v in rule.best_iteration] == [25, 10]
    assert [int(v) for v in rule.stop_iteration] == [32, 17]
    assert t == 32
    torch.testing.assert_close(rule.best_image[0], images[25][0])
    torch.testing.assert_close(rule.best_image[1], images[10][1])
    assert wmv_stop_point(dist, 7) == (25, 32)  # the same rule replays a record
    with pytest.raises(ValueError, match="reference_patience"):
        ReferenceDistance(ref, patience=0, device=torch.device("cpu"))


def test_fit_with_reference_stops_at_the_closest_average():
    x, y = noisy(sigma=0.2)
    kw = dict(iterations=300, early_stopping="reference", reference_patience=20, **TINY)
    r = dip.fit(y, Denoise(0.2), reference=x, ground_truth=x, **kw)
    best, stop = wmv_stop_point(r.history["distance"], 20)
    assert r.stopped_at is not None and (r.best_iteration, r.stopped_at) == (best, stop)
    # with the clean image as reference the rule's distance is the MSE: its minimum is the peak
    assert r.history["psnr"][best] == pytest.approx(max(r.history["psnr"][:stop + 1]), abs=1e-3)
    err = float(((r.image - x) ** 2).mean())
    assert r.history["distance"][best] == pytest.approx(err, rel=1e-4)
    with pytest.raises(ValueError, match="reference"):
        dip.fit(y, Denoise(0.2), **kw)  # the rule without a reference
    with pytest.raises(ValueError, match="reference"):
        dip.fit(y, Denoise(0.2), reference=x, **TINY)  # a reference without the rule
    with pytest.raises(ValueError, match="reference"):
        dip.fit(y, Denoise(0.2), reference=x[:, :8], **kw)


def test_autocast_runs_in_bfloat16_and_returns_float32():
    x, y = noisy()
    seen = []
    r = dip.fit(y, Denoise(0.1), iterations=3, autocast=True, **TINY,
                callback=lambda s: seen.append(s.net(torch.rand(1, 8, 24, 24)).dtype))
    assert r.image.dtype == torch.float32 and torch.isfinite(r.image).all()
    plain = dip.fit(y, Denoise(0.1), iterations=3, **TINY)
    assert not torch.equal(r.image, plain.image)  # bf16 arithmetic differs from float32
    assert torch.allclose(r.image, plain.image, atol=0.05)
    with pytest.raises(ValueError, match="autocast"):
        DIPConfig(autocast="yes")


@pytest.mark.parametrize("method", ["pca", "mad"])
def test_noise_estimate(method):
    x, y = noisy((3, 64, 64), sigma=0.1, seed=1)
    est = estimate_noise_sigma(torch.stack([y, x]), method)
    assert abs(float(est[0]) - 0.1) < 0.01 and float(est[1]) < 0.01


def test_pca_noise_estimate_on_a_photo_and_where_mad_reads_high():
    from dipprior.io import sample_image

    x = sample_image("chelsea", 128)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for sigma in (5 / 255, 25 / 255, 50 / 255):
        y = (x + sigma * noise)[None]
        assert float(estimate_noise_sigma(y)[0]) == pytest.approx(sigma, rel=0.04)
    # texture leaks into the Haar band: at a low noise level the wavelet estimate reads high
    assert float(estimate_noise_sigma((x + 5 / 255 * noise)[None], "mad")[0]) > 1.2 * 5 / 255


def test_noise_estimate_errors_and_small_images():
    with pytest.raises(ValueError, match="method"):
        estimate_noise_sigma(torch.rand(1, 3, 16, 16), "median")
    with pytest.raises(ValueError, match="y"):
        estimate_noise_sigma(torch.rand(3, 16, 16))
    small = torch.rand(2, 3, 12, 12)  # too few patches for 3x3x3 PCA: the wavelet estimate
    torch.testing.assert_close(estimate_noise_sigma(small), estimate_noise_sigma(small, "mad"))


def test_haar_diagonal_by_hand():
    x = torch.tensor([[1.0, 2.0, 9.0], [4.0, 8.0, 9.0], [9.0, 9.0, 9.0]])[None]
    # (a - b - c + d) / 2 of the one full 2x2 block; the odd last row and column are dropped
    torch.testing.assert_close(haar_diagonal(x), torch.tensor([[[1.5]]]))
    white = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert float(haar_diagonal(0.3 * white).std()) == pytest.approx(0.3, rel=0.03)


def test_channels_last_rule():
    assert use_channels_last(DIPConfig(channels=64)) is True
    assert use_channels_last(DIPConfig(channels=16)) is False
    assert use_channels_last(DIPConfig(channels=[16, 16, 32, 16, 16])) is True
    assert use_channels_last(DIPConfig(channels=64, channels_last=False)) is False
    assert use_channels_last(DIPConfig(channels=16, channels_last=True)) is True


@pytest.mark.slow
def test_fit_with_discrepancy_stops_where_the_loss_reaches_the_noise_level():
    x, y = noisy(sigma=0.2)
    kw = dict(iterations=300, early_stopping="discrepancy", discrepancy_window=10, **TINY)
    r = dip.fit(y, Denoise(0.2), ground_truth=x, **kw)
    loss = np.array(r.history["loss"])
    crossed = np.nonzero(np.convolve(loss, np.ones(10) / 10, "valid") <= 0.2**2)[0]
    assert r.stopped_at == r.best_iteration == crossed[0] + 9
    assert dip.discrepancy_stop_point(r.history["loss"], 0.2**2, 10) == r.stopped_at
    err = float(((r.image - x) ** 2).mean())
    assert r.history["psnr"][r.stopped_at] == pytest.approx(-10 * math.log10(err), abs=1e-3)
    blind = dip.fit(y, **kw)  # no operator: sigma estimated from the observation
    assert blind.stopped_at is not None
    mask = random_pixel_mask((24, 24), 0.5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="noise level"):
        dip.fit(Inpaint(mask).degrade(x), Inpaint(mask), **kw)


# ----------------------------------------------------------------------------- spike recovery


def small_training(seed=0):
    torch.manual_seed(seed)
    net = SkipNet(4, depth=2, input_depth=3)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    image = torch.zeros(1, 3, 8, 8)
    z, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)

    def step():
        out = net(z)
        loss = ((out - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        image.copy_(out.detach())
        return loss.detach()

    return net, opt, image, step


def state_of(net, opt, image):
    s = {k: v.clone() for k, v in net.state_dict().items()} | {"image": image.clone()}
    for i, st in enumerate(opt.state.values()):
        s |= {f"{i}.{k}": v.clone() for k, v in st.items()}
    return s


@pytest.mark.parametrize("first", [False, True])
def test_spike_guard_restores_weights_and_optimizer(first):
    net, opt, image, step = small_training()
    guard = SpikeGuard(3.0, net, opt, [image], networks=1)
    guard.check(torch.stack([step() for _ in range(5)]).view(5, 1))
    older = state_of(net, opt, image)
    guard.check(torch.stack([step() for _ in range(5)]).view(5, 1))
    last = state_of(net, opt, image)
    losses = torch.stack([step() for _ in range(5)]).view(5, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(7.0)  # a blow-up
    losses[0 if first else 3] *= 100.0
    restored = guard.check(losses)
    assert restored.tolist() == [True]
    expected = older if first else last  # a spike at a chunk's first step blames the last snapshot
    torch.testing.assert_close(state_of(net, opt, image), expected, rtol=0, atol=0)


def test_spike_guard_ignores_normal_chunks_and_restores_one_network_of_many():
    torch.manual_seed(0)
    net = SkipNet.stack([SkipNet(4, depth=2, input_depth=3) for _ in range(2)])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    image = torch.zeros(2, 3, 8, 8)
    guard = SpikeGuard(3.0, net, opt, [image], networks=2)
    z, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)

    def chunk():
        out = []
        for _ in range(4):
            per = ((net(z) - y) ** 2).mean(dim=(1, 2, 3))
            opt.zero_grad()
            per.sum().backward()
            opt.step()
            out.append(per.detach())
        return torch.stack(out)

    assert not guard.check(chunk()).any()
    assert not guard.check(chunk()).any()
    snap = {k: v.clone() for k, v in net.state_dict().items()}
    losses = chunk()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses[2, 1] = float("nan")
    assert guard.check(losses).tolist() == [False, True]
    for k, v in net.state_dict().items():
        halves = v.view(2, -1)
        torch.testing.assert_close(halves[0], before[k].view(2, -1)[0])  # untouched
        torch.testing.assert_close(halves[1], snap[k].view(2, -1)[1])  # restored


@pytest.mark.slow
def test_fit_recovers_from_an_injected_spike():
    x, y = noisy()

    def blow_up(state):
        if state.iteration == 34:
            with torch.no_grad():
                for p in state.net.parameters():
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))

    kw = dict(iterations=60, callback=blow_up, **TINY)
    on = dip.fit(y, Denoise(0.1), **kw)
    off = dip.fit(y, Denoise(0.1), spike_recovery=False, **kw)
    clean = dip.fit(y, Denoise(0.1), iterations=60, **TINY)
    assert on.restores == [39] and off.restores == []
    assert on.history["loss"][:35] == clean.history["loss"][:35]
    assert max(on.history["loss"][35:40]) > 3 * on.history["loss"][33]  # the spike happened
    # after the restore the fit continues from iteration 29's state and stays at its level
    assert np.mean(on.history["loss"][50:]) < 1.2 * np.mean(clean.history["loss"][25:30])
    assert np.mean(off.history["loss"][50:]) > 2 * np.mean(on.history["loss"][50:])


# ----------------------------------------------------------------------------- batched fits


@pytest.mark.slow
def test_batched_equals_sequential():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 24, 24, generator=g)
    y = Denoise(0.1).degrade(x, g)
    short = dip.fit(y, Denoise(0.1), iterations=3, **TINY)
    for n in range(2):  # same init, inputs and perturbations as a single fit with seed + n
        single = dip.fit(y[n], Denoise(0.1), iterations=3, seed=n, **TINY)
        torch.testing.assert_close(short[n].image, single.image, atol=1e-4, rtol=0)
        np.testing.assert_allclose(short[n].history["loss"], single.history["loss"], rtol=1e-4)
    long = dip.fit(y, Denoise(0.1), iterations=40, **TINY)
    for n in range(2):  # float rounding differs, the fits stay statistically the same
        single = dip.fit(y[n], Denoise(0.1), iterations=40, seed=n, **TINY)
        assert abs(np.mean(long[n].history["loss"][-10:])
                   - np.mean(single.history["loss"][-10:])) < 0.02 * np.mean(
                       single.history["loss"][-10:])
        assert float((long[n].image - single.image).abs().mean()) < 5e-3


def test_an_informative_input_replaces_the_first_input_channels():
    """fit(..., input_image=x): the network's first input channels are x (the rest noise), so
    the fit differs from the noise-input one; a wrong shape or too many channels is refused."""
    y = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    op = Denoise(0.1)
    seen = []

    def first_input(state):
        seen.append(state)
        return True  # stop after the first iteration

    start = torch.full((3, 16, 16), 0.25)
    cfg = dict(TINY, iterations=3, reg_noise_std=0.0)
    informed = dip.fit(y, op, input_image=start, **cfg)
    plain = dip.fit(y, op, **cfg)
    assert not torch.equal(informed.image, plain.image)
    net, z = build_network(DIPConfig(**cfg), 0, (1, 3, 16, 16))
    z[:, :3] = start
    with torch.no_grad():
        expected = net.train()(z)
    again = dip.fit(y, op, input_image=start, callback=first_input, **cfg)
    torch.testing.assert_close(seen[0].output, expected, rtol=1e-5, atol=1e-5)
    assert again.iterations == 1
    with pytest.raises(ValueError, match="input_image"):
        dip.fit(y, op, input_image=torch.rand(3, 8, 8), **cfg)
    with pytest.raises(ValueError, match="input_image"):
        dip.fit(y, op, input_image=start, **dict(cfg, input_depth=2))
