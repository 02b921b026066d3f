"""A user's own inputs: grey images, and the cases that used to pass silently (issue #23)."""

import pytest
import torch

from dipprior.estimators import estimate_noise_sigma
from dipprior.io import sample_image, save_image


def _grey(size: int = 128) -> torch.Tensor:
    return sample_image("astronaut", size).mean(0, keepdim=True)


@pytest.mark.parametrize("sigma", [16, 25, 50])
def test_noise_of_a_grey_image_stored_as_rgb_is_estimated(sigma):
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(0))
    noisy = (_grey() + sigma / 255 * noise).expand(3, -1, -1)
    estimate = 255 * float(estimate_noise_sigma(noisy[None])[0])
    assert abs(estimate - sigma) <= 0.1 * sigma  # was 0.0: identical channels


def test_linearly_dependent_channels_never_read_as_noise_free():
    noise = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(1))
    g = _grey() + 20 / 255 * noise
    dependent = torch.cat([g, 0.5 * g + 0.2, 0.8 * g])
    assert 255 * float(estimate_noise_sigma(dependent[None])[0]) > 10
    clean_rgb = sample_image("astronaut", 64)  # independent colour channels: unchanged path
    assert 255 * float(estimate_noise_sigma(clean_rgb[None])[0]) < 5


def test_a_dip_image_on_the_wrong_scale_is_refused(model):
    from dipprior.diffusion import Scheduler
    from dipprior.operators import Denoise
    from dipprior.pipeline import DIPInitializedSampler

    y = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    sampler = DIPInitializedSampler(model, Scheduler(), init="dip", steps=2, progress=False)
    with pytest.raises(ValueError, match="dip_image: values span.*0..255"):
        sampler(y, Denoise(0.1), dip_image=torch.rand(3, 16, 16) * 255)


def test_training_data_on_the_wrong_scale_is_refused(make_unet):
    from dipprior.diffusion import Scheduler, train

    with pytest.raises(ValueError, match="data: values span.*0..255"):
        train(make_unet(), Scheduler(), [torch.rand(3, 16, 16) * 255] * 4, steps=2,
              batch_size=2, progress=False)


def test_an_empty_image_is_not_written(tmp_path):
    for bits in (8, 16):
        with pytest.raises(ValueError, match="tensor: empty image"):
            save_image(torch.rand(3, 0, 8), tmp_path / "e.png", bits=bits)
    assert not (tmp_path / "e.png").exists()
