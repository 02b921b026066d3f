import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dipprior.operators import (
    Denoise,
    Inpaint,
    SuperResolution,
    bicubic_taps,
    mask_from_image,
    random_box_mask,
    random_pixel_mask,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def operators(h=24, w=36):
    g = gen(1)
    return [
        Denoise(0.1),
        Inpaint(random_pixel_mask((h, w), 0.5, g), sigma=0.05),
        Inpaint(random_pixel_mask((3, h, w), 0.3, g)),
        SuperResolution(2, "box", sigma=0.02),
        SuperResolution(4, "box"),
        SuperResolution(2),
        SuperResolution(3, sigma=0.01),
        SuperResolution(4),
    ]


@pytest.mark.parametrize("op", operators(), ids=repr)
@pytest.mark.parametrize("batched", [False, True])
def test_adjoint_identity(op, batched):
    g = gen(2)
    shape = (2, 3, 24, 36) if batched else (3, 24, 36)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randn(op.output_shape(shape), generator=g, dtype=torch.float64)
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert op(x).shape == y.shape and op.adjoint(y).shape == x.shape
    assert abs(float(lhs - rhs)) < 1e-10 * float(lhs.abs() + 1)


@pytest.mark.parametrize("op", operators(), ids=repr)
def test_proximal_is_the_minimiser(op):
    g = gen(3)
    x0 = torch.rand(2, 3, 24, 36, generator=g, dtype=torch.float64)
    y = torch.rand(op.output_shape(x0.shape), generator=g, dtype=torch.float64)
    sigma, rho = 0.2, torch.tensor([0.5, 3.0], dtype=torch.float64)
    x = op.proximal(x0, y, rho, sigma=sigma)
    # gradient of ||y - A x||^2 / (2 sigma^2) + rho/2 ||x - x0||^2 vanishes at the minimiser
    grad = op.adjoint(op(x) - y) / sigma**2 + rho.view(-1, 1, 1, 1) * (x - x0)
    scale = (op.adjoint(y) / sigma**2).abs().max()
    assert float(grad.abs().max()) < 1e-5 * float(scale)
    # and it lowers the objective compared with nearby points
    def objective(v):
        return ((y - op(v)) ** 2).sum() / (2 * sigma**2) + (rho.view(-1, 1, 1, 1) / 2 * (
            v - x0) ** 2).sum()
    assert objective(x) <= objective(x + 1e-3 * torch.randn(x.shape, generator=g,
                                                             dtype=x.dtype))


@pytest.mark.parametrize("op", [o for o in operators() if not (
    isinstance(o, SuperResolution) and o.kernel == "bicubic")], ids=repr)
def test_closed_form_proximal_agrees_with_conjugate_gradient(op):
    g = gen(4)
    x0 = torch.rand(3, 24, 36, generator=g, dtype=torch.float64)
    y = torch.rand(op.output_shape(x0.shape), generator=g, dtype=torch.float64)
    for sigma in (0.3, 0.0):
        closed = op.proximal(x0, y, 2.0, sigma=sigma)
        cg = op.proximal_cg(x0, y, 2.0, sigma=sigma, tol=1e-12)
        torch.testing.assert_close(closed, cg, atol=1e-9, rtol=0)


def test_zero_sigma_is_a_hard_constraint():
    g = gen(5)
    mask = random_pixel_mask((16, 16), 0.5, g)
    op = Inpaint(mask)
    x0, y = torch.rand(3, 16, 16, generator=g), op(torch.rand(3, 16, 16, generator=g))
    x = op.proximal(x0, y, 1.0)  # noise_sigma 0
    torch.testing.assert_close(x, torch.where(mask.bool(), y, x0))
    sr = SuperResolution(4)
    hr0 = torch.rand(3, 32, 32, generator=g, dtype=torch.float64)
    lr = torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sr(sr.proximal(hr0, lr, 1.0)), lr, atol=1e-5, rtol=0)


def test_proximal_sigma_override_and_scale():
    """Linear ops: scaling images by c scales sigma by c and rho by 1/c^2."""
    g = gen(6)
    op = SuperResolution(2, "box", sigma=0.1)
    x0, y = torch.rand(3, 16, 16, generator=g), torch.rand(3, 8, 8, generator=g)
    base = op.proximal(x0, y, 4.0)
    torch.testing.assert_close(op.proximal(x0, y, 4.0, sigma=0.1), base)
    torch.testing.assert_close(op.proximal(2 * x0, 2 * y, 1.0, sigma=0.2), 2 * base)
    assert not torch.allclose(op.proximal(x0, y, 4.0, sigma=0.3), base)


def test_denoise_proximal_closed_form_by_hand():
    x0, y = torch.tensor([[[0.0]]]).expand(3, 1, 1), torch.tensor([[[1.0]]]).expand(3, 1, 1)
    # (y - x)/sigma^2 = rho (x - x0) -> x = (y + rho sigma^2 x0) / (1 + rho sigma^2) = 1 / 1.5
    x = Denoise(0.5).proximal(x0, y, 2.0)
    torch.testing.assert_close(x, torch.full((3, 1, 1), 1 / 1.5))


def test_bicubic_matches_independent_resampler_inside_and_keeps_constants():
    g = gen(7)
    for f in (2, 3, 4):
        x = torch.rand(1, 3, 12 * f, 12 * f, generator=g, dtype=torch.float64)
        ours = SuperResolution(f)(x)
        ref = F.interpolate(x, scale_factor=1 / f, mode="bicubic", antialias=True,
                            align_corners=False)
        torch.testing.assert_close(ours[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3])
        const = torch.full((3, 4 * f, 4 * f), 0.3, dtype=torch.float64)
        torch.testing.assert_close(SuperResolution(f)(const), const[:, ::f, ::f])
    taps, pad = bicubic_taps(4)
    assert len(taps) == 16 and pad == 6 and np.isclose(taps.sum(), 1.0)
    np.testing.assert_allclose(taps, taps[::-1])


def test_box_is_block_mean_and_pseudo_inverse_is_nearest():
    x = torch.arange(16.0).reshape(1, 4, 4).expand(3, 4, 4)
    op = SuperResolution(2, "box")
    torch.testing.assert_close(op(x)[0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    y = op(x)
    torch.testing.assert_close(op.pseudo_inverse(y), y.repeat_interleave(2, -2)
                               .repeat_interleave(2, -1))


@pytest.mark.parametrize("op", operators(), ids=repr)
def test_pseudo_inverse_reproduces_the_observation(op):
    g = gen(8)
    y = op(torch.rand(2, 3, 24, 36, generator=g, dtype=torch.float64))
    x = op.pseudo_inverse(y)
    assert x.shape == (2, 3, 24, 36)
    torch.testing.assert_close(op(x), y, atol=1e-5, rtol=0)


def test_inpaint_pseudo_inverse_zeroes_unknown_pixels():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.ones(3, 2, 2)
    torch.testing.assert_close(Inpaint(mask).pseudo_inverse(y), mask.expand(3, 2, 2))


def test_degrade_adds_unclipped_reproducible_noise():
    x = torch.zeros(3, 64, 64)
    op = Denoise(25 / 255)
    y1, y2 = op.degrade(x, gen(9)), op.degrade(x, gen(9))
    torch.testing.assert_close(y1, y2)
    assert float(y1.min()) < 0  # not clipped
    assert abs(float(y1.std()) - 25 / 255) < 0.005
    assert not torch.equal(y1, op.degrade(x, gen(10)))
    sr = SuperResolution(2, sigma=0.05).degrade(torch.rand(2, 3, 16, 16), gen(0))
    assert sr.shape == (2, 3, 8, 8)
    mask = random_pixel_mask((16, 16), 0.5, gen(0))
    yi = Inpaint(mask, sigma=0.1).degrade(torch.rand(3, 16, 16), gen(0))
    assert torch.all(yi[:, mask == 0] == 0)


def test_float64_and_scale_agnostic_forward():
    op = SuperResolution(2)
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    assert op(x).dtype == torch.float64
    torch.testing.assert_close(op(2 * x - 1), 2 * op(x) - 1)  # weights sum to one


def test_mask_helpers():
    m = random_pixel_mask((10, 20), keep=0.25, generator=gen(0))
    assert m.shape == (10, 20) and int(m.sum()) == 50
    torch.testing.assert_close(m, random_pixel_mask((10, 20), 0.25, gen(0)))
    assert random_pixel_mask((3, 4, 5), 0.5, gen(0)).shape == (3, 4, 5)
    b = random_box_mask((32, 32), boxes=2, size=(0.25, 0.25), generator=gen(0))
    assert 32 * 32 - 2 * 64 <= int(b.sum()) <= 32 * 32 - 64
    assert set(b.unique().tolist()) <= {0.0, 1.0}


def test_mask_from_image(tmp_path):
    from skimage import io as skio

    array = np.zeros((6, 8), dtype=np.uint8)
    array[:, 4:] = 255
    path = tmp_path / "mask.png"
    skio.imsave(path, array, check_contrast=False)
    mask = mask_from_image(path)
    assert mask.shape == (6, 8) and mask[:, 4:].all() and not mask[:, :4].any()
    with pytest.raises(FileNotFoundError):
        mask_from_image(tmp_path / "missing.png")


def test_clear_errors():
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.ones(8, 8))(torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.ones(3, 8, 8))(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(4)(torch.rand(3, 18, 16))
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(0)
    with pytest.raises(TypeError, match="factor"):
        SuperResolution(2.5)
    with pytest.raises(ValueError, match="kernel"):
        SuperResolution(2, kernel="lanczos")
    with pytest.raises(ValueError, match="sigma"):
        Denoise(25)  # 0..255 scale
    with pytest.raises(ValueError, match="NaN"):
        Denoise(0.1).degrade(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="far outside"):
        Denoise(0.1).degrade(torch.full((3, 4, 4), 255.0))
    with pytest.raises(ValueError, match="shape"):
        Denoise(0.1)(torch.rand(4, 4))
    with pytest.raises(ValueError, match="rho"):
        Denoise(0.1).proximal(torch.rand(3, 4, 4), torch.rand(3, 4, 4), -1.0)
    with pytest.raises(ValueError, match="y"):
        SuperResolution(2).proximal(torch.rand(3, 8, 8), torch.rand(3, 8, 8), 1.0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("op", [Denoise(0.1), Inpaint(torch.ones(8, 8)), SuperResolution(4),
                                SuperResolution(2, "box")], ids=repr)
def test_integer_and_bool_images_are_refused(op, dtype):
    """A uint8 image was downsampled in integer arithmetic: all zeros, without a word."""
    x, xf = torch.zeros(3, 8, 8, dtype=dtype), torch.rand(3, 8, 8)
    y = op(xf)
    yi = torch.zeros(y.shape, dtype=dtype)
    calls = [(op.forward, (x,), "x"), (op, (x,), "x"), (op.degrade, (x,), "x"),
             (op.adjoint, (yi,), "y"), (op.pseudo_inverse, (yi,), "y"),
             (op.proximal, (x, y, 1.0), "x0"), (op.proximal, (xf, yi, 1.0), "y"),
             (op.proximal_cg, (xf, yi, 1.0), "y")]
    for method, args, name in calls:
        with pytest.raises(TypeError, match=rf"^{name}: expected a floating point tensor"):
            method(*args)


def test_size_arguments_are_bounded():
    """A huge factor or mask size used to allocate tens of GiB before failing."""
    with pytest.raises(ValueError, match=r"factor: expected an int in 1\.\.64, got 1000000000"):
        SuperResolution(10**9)
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(65, kernel="box")
    with pytest.raises(ValueError, match="factor"):
        bicubic_taps(10**9)
    assert SuperResolution(64)(torch.rand(3, 128, 128)).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="shape.*entries"):
        random_pixel_mask((100_000, 100_000), 0.5)
    with pytest.raises(ValueError, match="shape.*entries"):
        random_box_mask((3, 100_000, 100_000))
    with pytest.raises(ValueError, match=r"boxes: expected an int in 0\.\.10000"):
        random_box_mask((8, 8), boxes=10**9)
    with pytest.raises(TypeError, match="boxes"):
        random_box_mask((8, 8), boxes=2.5)


@pytest.mark.parametrize("make", [lambda: SuperResolution(2), lambda: SuperResolution(2, "box"),
                                  lambda: Inpaint(torch.ones(8, 8))],
                         ids=["bicubic", "box", "inpaint"])
def test_operators_used_under_inference_mode_still_work_with_autograd(make):
    """Kernels and masks cached (or made) under inference mode broke a later DIP fit."""
    with torch.inference_mode():
        op = make()
        op(torch.rand(3, 8, 8))
        op.adjoint(op(torch.rand(3, 8, 8)))
    x = torch.rand(3, 8, 8, requires_grad=True)
    op.adjoint(op(x)).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    with torch.inference_mode():
        assert op(torch.rand(3, 8, 8)).is_inference()


def test_center_box_mask_and_the_box_task():
    from dipprior.experiments.data import degrade
    from dipprior.operators import center_box_mask, make_task

    mask = center_box_mask((3, 10, 12), 4)
    assert mask.shape == (3, 10, 12)
    assert mask[:, 3:7, 4:8].sum() == 0 and mask.sum() == 3 * (120 - 16)  # centred hole only
    odd = center_box_mask((9, 9), 2)
    assert odd[3:5, 3:5].sum() == 0 and odd.sum() == 81 - 4  # (9 - 2) // 2 = 3
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="box"):
            center_box_mask((10, 10), bad)
    clean = torch.rand(3, 64, 64)
    op, y = degrade(clean, make_task("box"), seed=0)
    torch.testing.assert_close(op.mask.expand(3, 64, 64), center_box_mask((3, 64, 64), 32))
    assert (y[:, 16:48, 16:48] == 0).all() and torch.equal(y[:, :16], clean[:, :16])
