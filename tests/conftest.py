"""Shared fixtures: one torch thread for tiny tensors, the tiny UNet most tests use."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dipprior.diffusion import UNet


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscribing a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(perturb: float = 0.0, **overrides) -> UNet:
    """Base 8, levels (1, 2), one residual block, no dropout, seed 0; ``perturb`` adds that much
    Gaussian noise to every weight (the zero-initialised output layers would make every output
    0) and returns it in eval mode."""
    torch.manual_seed(0)
    config = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "dropout": 0.0,
              **overrides}
    net = UNet(**config)
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(perturb * torch.randn_like(p))
        net.eval()
    return net


@pytest.fixture(scope="session")
def make_unet() -> Callable[..., UNet]:
    return tiny_unet


@pytest.fixture(scope="session")
def model() -> UNet:
    """A tiny UNet with non-trivial outputs, in eval mode."""
    return tiny_unet(perturb=0.05)
