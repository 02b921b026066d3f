import math

import pytest
import torch

from dipprior.diffusion import UNet
from dipprior.diffusion.unet import timestep_embedding


def _net(**kw):
    torch.manual_seed(0)
    cfg = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(2,), dropout=0.0)
    net = UNet(**{**cfg, **kw})
    # the output conv starts at zero (as in DDPM); make the output depend on the input
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    for block in net.modules():
        if hasattr(block, "conv2") or hasattr(block, "proj"):
            for p in (block.conv2 if hasattr(block, "conv2") else block.proj).parameters():
                torch.nn.init.normal_(p, std=0.2)
    return net.eval()


@pytest.mark.parametrize("hw", [(16, 16), (13, 21), (1, 1), (3, 17), (33, 8)])
def test_any_size_keeps_shape(hw):
    net = _net()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        y = net(x, torch.tensor([3, 900]))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_timestep_forms_agree():
    net = _net()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        a = net(x, 250)
        b = net(x, torch.tensor([250, 250]))
        c = net(x, torch.tensor(250))
        d = net(x, 250.0)
        e = net(x, torch.tensor([250, 600]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, d)
    torch.testing.assert_close(a[0], e[0])
    assert not torch.allclose(a[1], e[1])


def test_batch_items_are_independent_and_deterministic():
    net = _net()
    x = torch.randn(3, 3, 8, 12)
    t = torch.tensor([1, 50, 999])
    with torch.no_grad():
        full = net(x, t)
        single = net(x[1:2], t[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(net(x, t), full)


def test_channels_last_matches():
    net = _net()
    x = torch.randn(2, 3, 20, 12)
    with torch.no_grad():
        ref = net(x, 10)
        cl = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), 10)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    net = _net(dropout=0.1).train()
    net(torch.randn(2, 3, 8, 8), torch.tensor([5, 500])).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_padding_is_cropped_not_resized():
    """A prediction on a padded size equals the one on the exact multiple, cropped."""
    net = _net(attention_resolutions=())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        y_small = net(x[..., :15, :15], 7)
        # reflect padding of the 15x15 crop is exactly what net pads internally
        padded = torch.nn.functional.pad(x[..., :15, :15], (0, 1, 0, 1), mode="reflect")
        y_ref = net(padded, 7)[..., :15, :15]
    torch.testing.assert_close(y_small, y_ref)


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = [math.exp(-math.log(10000) * k / 4) for k in range(4)]
    expected = [math.sin(f) for f in freqs] + [math.cos(f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected))


def test_config_and_parameter_counts():
    net = UNet(base_channels=32)
    assert net.config == {"in_channels": 3, "base_channels": 32, "channel_mults": [1, 2, 2],
                          "num_res_blocks": 2, "attention_resolutions": [], "dropout": 0.1}
    n32 = sum(p.numel() for p in net.parameters())
    n64 = sum(p.numel() for p in UNet(base_channels=64).parameters())
    assert 1.0e6 < n32 < 2.5e6 and 3.5 < n64 / n32 < 4.1  # convs scale with channels squared


def test_bad_arguments():
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(channel_mults=(1, 2), attention_resolutions=(4,))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(channel_mults=())
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.0)
    net = _net()
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 8, 8), 3)
    with pytest.raises(ValueError, match="t must"):
        net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="t must"):
        net(torch.randn(2, 3, 8, 8), "5")


def test_diffusers_unet_wrapped_in_one_line_samples():
    diffusers = pytest.importorskip("diffusers")
    from dipprior.diffusion import Scheduler, sample

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    x = sample(lambda x, t: unet(x, t).sample, Scheduler(), (1, 3, 8, 8), steps=3,
               generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (1, 3, 8, 8) and 0 <= x.min() and x.max() <= 1


def test_pad_to_multiple_reaches_the_multiple_and_the_minimum():
    from dipprior.diffusion.unet import pad_to_multiple

    x = torch.rand(1, 3, 9, 16)
    assert pad_to_multiple(x, 8).shape[-2:] == (16, 16)
    assert pad_to_multiple(x, 8, 24).shape[-2:] == (24, 24)
    assert pad_to_multiple(torch.rand(1, 3, 17, 3), 8, 16).shape[-2:] == (24, 16)
    assert pad_to_multiple(x[..., :8, :], 8).shape[-2:] == (8, 16)
    y = torch.rand(1, 3, 32, 32)
    assert pad_to_multiple(y, 8, 16) is y  # nothing to pad: the input itself
    padded = pad_to_multiple(x, 8)
    assert torch.equal(padded[..., :9, :16], x)  # bottom/right padding, the image unchanged


def _attention_reference(qkv: torch.Tensor) -> torch.Tensor:
    """Single-head softmax attention written out: softmax(q^T k / sqrt(c)) v per pixel."""
    n, c3, h, w = qkv.shape
    q, k, v = qkv.double().reshape(n, 3, c3 // 3, h * w).unbind(1)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c3 // 3), dim=-1)
    return (v @ weights.transpose(1, 2)).reshape(n, c3 // 3, h, w)


def test_windowed_attention_attends_within_each_window_only():
    from dipprior.diffusion.unet import AttnBlock

    block = AttnBlock(8)
    torch.nn.init.normal_(block.proj.weight)
    x = torch.randn(1, 8, 10, 7, generator=torch.Generator().manual_seed(0))
    block.window = 4  # rows cut 0:3, 3:7, 7:10 (fewest near-equal spans); columns 0:4, 4:7
    with torch.no_grad():
        qkv = block.qkv(block.norm(x))
        expected = torch.zeros(1, 8, 10, 7, dtype=torch.float64)
        for r0, r1 in ((0, 3), (3, 7), (7, 10)):
            for c0, c1 in ((0, 4), (4, 7)):
                expected[..., r0:r1, c0:c1] = _attention_reference(qkv[..., r0:r1, c0:c1])
        expected = x.double() + block.proj(expected.float()).double()
        assert torch.allclose(block(x).double(), expected, atol=1e-5)
        block.window = None  # global: every pixel attends to every other
        glob = x.double() + block.proj(_attention_reference(qkv).float()).double()
        assert torch.allclose(block(x).double(), glob, atol=1e-5)


def test_attention_window_no_smaller_than_the_image_changes_nothing():
    net = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(1,))
    torch.manual_seed(0)
    for param in net.parameters():  # no zero-initialised layer hiding the attention
        torch.nn.init.normal_(param, std=0.2)
    net.eval()
    x, t = torch.randn(1, 3, 24, 20, generator=torch.Generator().manual_seed(1)), 100
    with torch.no_grad():
        ref = net(x, t)
        net.attention_window = 24
        assert torch.equal(net(x, t), ref)
        net.attention_window = 8  # 8-px windows: 4 tokens a side at the coarsest level
        assert net.mid[1].window == 4 and net.down[0].attn.window == 8
        assert (net(x, t) - ref).abs().max() > 1e-3
    with pytest.raises(ValueError, match="attention_window"):
        net.attention_window = 1


def test_channels_last_runs_the_same_arithmetic():
    net = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(2,)).eval()
    x = torch.randn(2, 3, 20, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net(x, 50)
        net.channels_last = True
        assert net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        out = net(x, 50)
    assert out.is_contiguous() and torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(TypeError, match="channels_last"):
        net.channels_last = "yes"
