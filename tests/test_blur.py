"""Blur: the FFT operator against scipy, its adjoint and proximal, the kernels, bad kernels."""

import numpy as np
import pytest
import scipy.ndimage as ndimage
import torch

from dipprior.operators import Blur, gaussian_kernel, motion_kernel, parse_blur


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("kshape, shape", [((5, 7), (3, 17, 22)), ((13, 13), (2, 3, 32, 29)),
                                           ((1, 3), (3, 8, 5))])
def test_forward_equals_scipy_convolve_wrap(kshape, shape):
    kernel = _rand(*kshape, seed=1)
    x = _rand(*shape)
    y = Blur(kernel)(x)
    k = (kernel / kernel.sum()).numpy()
    flat = x.reshape(-1, *shape[-2:]).numpy()
    ref = np.stack([ndimage.convolve(c, k, mode="wrap") for c in flat]).reshape(shape)
    assert y.shape == x.shape and np.abs(y.numpy() - ref).max() < 1e-5
    assert torch.allclose(Blur(kernel)(x.float()).double(), y, atol=1e-5)  # float32 too


def test_adjoint_is_the_transpose():
    op = Blur(motion_kernel(9, 0.7, torch.Generator().manual_seed(2)))
    x, y = _rand(2, 3, 20, 24, seed=3), _rand(2, 3, 20, 24, seed=4)
    assert abs(float((op(x) * y).sum() - (x * op.adjoint(y)).sum())) < 1e-5


@pytest.mark.parametrize("sigma, rho", [(0.05, 3.0), (0.01, torch.tensor([0.5, 40.0]))])
def test_proximal_solves_its_normal_equations(sigma, rho):
    op = Blur(gaussian_kernel(7, 1.5), sigma=sigma)
    x0, y = _rand(2, 3, 16, 18, seed=5), _rand(2, 3, 16, 18, seed=6)
    closed = op.proximal(x0, y, rho)
    cg = op.proximal_cg(x0, y, rho, tol=1e-12, max_iter=2000)
    assert float((closed - cg).abs().max()) <= 1e-5
    lam = torch.as_tensor(rho, dtype=x0.dtype).reshape(-1, 1, 1, 1) * sigma**2
    residual = op.adjoint(op(closed)) + lam * closed - (op.adjoint(y) + lam * x0)
    assert float(residual.abs().max()) <= 1e-5


def test_hard_constraint_and_pseudo_inverse():
    op = Blur(gaussian_kernel(5, 1.0))  # no zero in its spectrum on this grid
    x = _rand(3, 16, 16, seed=7)
    y = op(x)
    hard = op.proximal(torch.zeros_like(x), y, 1.0)  # sigma = 0: A x = y, except where
    assert float((op(hard) - y).abs().max()) < 1e-3  # |K|^2 < 1e-6 (x0's frequencies kept)
    wiener = op.pseudo_inverse(y)
    assert wiener.shape == x.shape
    assert float((wiener - x).abs().mean()) < float((y - x).abs().mean())  # it deblurs


def test_any_device_dtype_and_batch_rank():
    op = Blur(gaussian_kernel(3, 1.0))
    x = _rand(3, 10, 12, dtype=torch.float32)
    assert op(x).dtype == torch.float32 and op(x[None]).shape == (1, 3, 10, 12)
    assert torch.allclose(op(x), op(x.double()).float(), atol=1e-6)
    with torch.inference_mode():
        op(x)
    x.requires_grad_(True)
    op(x).sum().backward()  # a spectrum cached under inference_mode is not reused in autograd
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-5)  # sums to 1: A^T 1 = 1


def test_kernels():
    g = gaussian_kernel(13, 2.0)
    assert g.shape == (13, 13) and abs(float(g.sum()) - 1) < 1e-12 and torch.equal(g, g.T)
    assert int(g.argmax()) == 6 * 13 + 6
    a = motion_kernel(15, 0.5, torch.Generator().manual_seed(0))
    b = motion_kernel(15, 0.5, torch.Generator().manual_seed(0))
    c = motion_kernel(15, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (15, 15) and abs(float(a.sum()) - 1) < 1e-12 and float(a.min()) >= 0
    assert int((a > 0).sum()) >= 15  # a path, not a point
    line = motion_kernel(15, 0.0, torch.Generator().manual_seed(0))  # no jitter: a segment
    assert int((line > 0).sum()) <= 3 * 15
    assert parse_blur("gaussian:2").shape == (13, 13)
    assert parse_blur("motion:15", torch.Generator().manual_seed(0)).shape == (15, 15)


@pytest.mark.parametrize("kernel, match", [
    (torch.ones(4, 5), "odd height and width"),
    (torch.ones(3), "2D"),
    (torch.zeros(3, 3), "all zeros"),
    (torch.tensor([[1.0, float("nan"), 1.0]]), "NaN"),
    (-torch.ones(3, 3), "sum to"),
    ("gauss", "expected a 2D tensor"),
    (torch.ones(301, 301), "larger than"),
    # entries that all but cancel: normalising would scale them by up to 1e15 (issue #30)
    (torch.tensor([[1, -0.999999, 0]], dtype=torch.float64), "sum to 1e-06 against a magnitude"),
    (torch.tensor([[0.1, 0.2, -0.3]], dtype=torch.float64), "clear non-zero value"),
    (np.array([[1, "a", 2]], dtype=object), "array of real numbers, got dtype object"),
    (torch.ones(3, 3, dtype=torch.complex64), "real numbers"),
])
def test_bad_kernels_are_refused(kernel, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Blur(kernel)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="smaller than the 13x13 blur kernel"):
        Blur(gaussian_kernel(13, 2.0))(torch.rand(3, 8, 32))
    with pytest.raises(ValueError, match="sigma"):
        Blur(gaussian_kernel(3, 1.0), sigma=2.55)
    with pytest.raises(ValueError, match="regularizer"):
        Blur(gaussian_kernel(3, 1.0), regularizer=0)
    with pytest.raises(ValueError, match="odd int"):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="std"):
        gaussian_kernel(5, 0)
    with pytest.raises(ValueError, match="intensity"):
        motion_kernel(15, 2.0)
    for spec in ("box:3", "gaussian:x", "motion:14", "motion:2.5", "gaussian:-1"):
        with pytest.raises(ValueError, match="blur"):
            parse_blur(spec)


def test_a_kernel_with_negative_lobes_that_sums_clearly_is_kept():
    k = torch.tensor([[-0.1, 1.2, -0.1]], dtype=torch.float64)
    assert torch.allclose(Blur(k).kernel, k)


def test_gaussian_kernels_at_extreme_stds_and_numpy_numbers():
    """std 1e-200 gave all NaN, 1e200 an OverflowError, np.float32(2) was refused (#30)."""
    delta = gaussian_kernel(13, 1e-200)  # the limit: no blur
    assert torch.equal(delta, torch.nn.functional.one_hot(torch.tensor(6 * 13 + 6), 169)
                       .double().reshape(13, 13))
    box = gaussian_kernel(13, 1e200)  # the limit: a box
    assert torch.allclose(box, torch.full((13, 13), 1 / 169, dtype=torch.float64))
    assert torch.allclose(gaussian_kernel(13, np.float32(2)), gaussian_kernel(13, 2.0))
    assert torch.equal(parse_blur("gaussian:1e-200"), gaussian_kernel(3, 1e-200))
    Blur(parse_blur("gaussian:1e-200"))  # a valid (identity) kernel, not "contains NaN"
    with pytest.raises(ValueError, match="std"):
        gaussian_kernel(5, np.float64("nan"))
    with pytest.raises(ValueError, match="std"):
        gaussian_kernel(5, True)


def test_motion_kernel_names_a_bad_generator():
    with pytest.raises(TypeError, match="generator: expected a torch.Generator or None, got str"):
        motion_kernel(15, 0.5, "x")
    assert motion_kernel(15, np.float32(0.5)).shape == (15, 15)


def test_a_hard_constraint_with_a_gaussian_blur_stays_bounded():
    """sigma = 0 with the benchmark kernel in float32: frequencies the kernel all but removes
    keep x0's instead of dividing by ~0 (values up to 8.9 before)."""
    op = Blur(gaussian_kernel(13, 2.0))
    x = _rand(3, 64, 64, seed=8, dtype=torch.float32)
    y = op(x)
    out = op.proximal(torch.full_like(x, 0.5), y, 1.0)
    assert float(out.abs().max()) < 2 and float((op(out) - y).abs().max()) < 1e-3
