"""The skip hourglass of Ulyanov et al., "Deep Image Prior" (CVPR 2018).

Layer for layer the ``skip`` network of the reference code (``models/skip.py`` with
``num_channels_down = num_channels_up = [channels] * depth``, ``num_channels_skip =
[skip_channels] * depth``, ``downsample_mode="stride"``, ``need1x1_up=True``, ``need_sigmoid=True``,
``act_fun="LeakyReLU"``). At every scale::

    x --+-- conv3x3/2 - BN - LReLU - conv3x3 - BN - LReLU - [next scale] - upsample x2 --+
        +-- conv1x1 - BN - LReLU (skip) -------------------------------------------------+
                                                                                         |
        concat(skip, deep) - BN - conv3x3 - BN - LReLU - conv1x1 - BN - LReLU  <---------+

then a final 1x1 convolution to 3 channels and a sigmoid. LeakyReLU slope 0.2, reflection padding,
PyTorch's default initialisation (the reference does no custom init). Two deliberate differences,
neither of which changes a forward pass of the reference in training mode (the only mode DIP uses):

- BatchNorm does not track running statistics, so ``eval()`` gives the same output as training.
- Any H x W: the input is reflect-padded to a multiple of ``2**depth`` (and to at least
  ``2**(depth + 1)``, so the coarsest scale is >= 2x2) and the output cropped back (the reference
  crops images to a multiple of 32 instead).

``SkipNet(..., networks=N)`` holds N independent networks as grouped convolutions (BatchNorm is
per channel, hence per network): input (N, input_depth, H, W), output (N, 3, H, W). Build it from N
single networks with :meth:`SkipNet.stack` so that each has exactly the single network's init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MAX_CHANNELS", "MAX_DEPTH", "SkipNet", "too_small"]

Channels = int | Sequence[int]

#: the deepest hourglass: inputs are padded to >= 2**(depth + 1) pixels a side, so depth 10
#: already computes on >= 2048 x 2048 maps (and a typo such as 40 would ask for terabytes)
MAX_DEPTH = 10
#: the most channels at one scale, of a skip connection, of ``z`` or of the output (the
#: reference uses 128)
MAX_CHANNELS = 1024


def _per_scale(value: Channels, depth: int, name: str, minimum: int) -> list[int]:
    values = [value] * depth if isinstance(value, int) else list(value)
    if len(values) != depth or any(
        isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= MAX_CHANNELS
        for v in values
    ):
        raise ValueError(f"{name}: expected an int in {minimum}..{MAX_CHANNELS} or {depth} such "
                         f"ints, got {value!r}")
    return values


def too_small(height: int, width: int, depth: int) -> bool:
    """Whether an H x W input leaves a ``depth``-scale hourglass with constant feature maps.

    Reflection padding repeats a side of 2 or 3 pixels with period 2 or 4, which one or two
    stride-2 convolutions turn into a constant; when that happens to both sides (a 1 x 1 input is
    constant from the start), every BatchNorm below divides a zero variance by sqrt(eps) and the
    gradients overflow to NaN within a few steps. A side of 1 next to a longer one is padded by
    replication and collapses nothing; sides of 4 or more pixels never collapse.
    """
    if height == 1 and width == 1:
        return True
    if height == 1 or width == 1:
        return False
    collapse = {2: 1, 3: 2}  # side -> the scale at which it has become constant
    return height in collapse and width in collapse and max(
        collapse[height], collapse[width]) <= depth


class _Conv(nn.Conv2d):
    """Conv with 'same' padding (reflection or zeros), optional stride 2, ``groups`` networks."""

    def __init__(self, cin: int, cout: int, k: int, groups: int, pad: str, stride: int = 1):
        super().__init__(cin * groups, cout * groups, k, stride=stride, padding=(k - 1) // 2,
                         groups=groups, padding_mode="reflect" if pad == "reflection" else "zeros")


def _bn_act(c: int, groups: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c * groups, track_running_stats=False), nn.LeakyReLU(0.2, inplace=True)]


class _Scale(nn.Module):
    """One scale of the hourglass; ``inner`` is the next (coarser) scale or None at the bottom."""

    def __init__(self, cin: int, down: int, up: int, skip: int, inner: _Scale | None,
                 groups: int, pad: str, upsample: str) -> None:
        super().__init__()
        self.groups, self.skip_channels = groups, skip
        self.skip = (nn.Sequential(_Conv(cin, skip, 1, groups, pad), *_bn_act(skip, groups))
                     if skip else None)
        self.down = nn.Sequential(
            _Conv(cin, down, 3, groups, pad, stride=2), *_bn_act(down, groups),
            _Conv(down, down, 3, groups, pad), *_bn_act(down, groups),
        )
        self.inner = inner
        self.upsample = upsample
        deep = inner.out_channels if inner is not None else down
        self.up = nn.Sequential(
            nn.BatchNorm2d((skip + deep) * groups, track_running_stats=False),
            _Conv(skip + deep, up, 3, groups, pad), *_bn_act(up, groups),
            _Conv(up, up, 1, groups, pad), *_bn_act(up, groups),
        )
        self.out_channels = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        if self.inner is not None:
            d = self.inner(d)
        d = F.interpolate(d, scale_factor=2, mode=self.upsample,
                          align_corners=False if self.upsample == "bilinear" else None)
        if self.skip is not None:
            s = self.skip(x)
            if self.groups == 1:
                d = torch.cat([s, d], dim=1)
            else:  # concatenate per network: [skip_n, deep_n] for n = 1..N
                n, (h, w) = self.groups, d.shape[-2:]
                d = torch.cat([s.reshape(-1, n, self.skip_channels, h, w),
                               d.reshape(-1, n, d.shape[1] // n, h, w)], dim=2)
                d = d.reshape(-1, d.shape[1] * d.shape[2], h, w)
        return self.up(d)


def _reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding of any size (repeated reflections; replicate for a 1-pixel side)."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        t, b = min(top, h - 1), min(bottom, h - 1)
        l_, r = min(left, w - 1), min(right, w - 1)
        if (h == 1 and (top or bottom)) or (w == 1 and (left or right)):
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, (l_, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l_, right - r
    return x


class SkipNet(nn.Module):
    """The DIP skip hourglass (see the module docstring).

    Args:
        channels: filters per scale (down and up), an int or a list of ``depth`` ints.
        depth: number of scales (the input is downsampled ``depth`` times by strided convs).
        skip_channels: channels of each skip connection (0 = no skip at that scale).
        input_depth: channels of the network input ``z``.
        upsample: ``"bilinear"`` or ``"nearest"``.
        pad: ``"reflection"`` or ``"zero"``.
        out_channels: channels of the output image.
        networks: number of independent networks evaluated together (grouped convolutions).

    Example:
        >>> net = SkipNet(channels=8, depth=3)
        >>> net(torch.rand(1, 32, 21, 30)).shape
        torch.Size([1, 3, 21, 30])
    """

    def __init__(
        self,
        channels: Channels = 128,
        depth: int = 5,
        skip_channels: Channels = 4,
        input_depth: int = 32,
        upsample: str = "bilinear",
        pad: str = "reflection",
        out_channels: int = 3,
        *,
        networks: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth: expected an int in 1..{MAX_DEPTH}, got {depth!r}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample: expected 'bilinear' or 'nearest', got {upsample!r}")
        if pad not in ("reflection", "zero"):
            raise ValueError(f"pad: expected 'reflection' or 'zero', got {pad!r}")
        for name, v in (("input_depth", input_depth), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CHANNELS:
                raise ValueError(f"{name}: expected an int in 1..{MAX_CHANNELS}, got {v!r}")
        if isinstance(networks, bool) or not isinstance(networks, int) or networks < 1:
            raise ValueError(f"networks: expected an int >= 1, got {networks!r}")
        chans = _per_scale(channels, depth, "channels", 1)
        skips = _per_scale(skip_channels, depth, "skip_channels", 0)
        self.config = dict(channels=chans, depth=depth, skip_channels=skips,
                           input_depth=input_depth, upsample=upsample, pad=pad,
                           out_channels=out_channels)
        self.networks = networks
        inner = None
        for i in reversed(range(depth)):  # build from the coarsest scale up
            cin = input_depth if i == 0 else chans[i - 1]
            inner = _Scale(cin, chans[i], chans[i], skips[i], inner, networks, pad, upsample)
        self.body = inner
        self.head = _Conv(chans[0], out_channels, 1, networks, pad)

    @property
    def multiple(self) -> int:
        """Height and width are padded internally to a multiple of this (and to >= twice it)."""
        return 2 ** self.config["depth"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: (B, input_depth, H, W), or (networks, input_depth, H, W) for grouped networks."""
        n = self.networks
        if z.dim() != 4 or z.shape[1] != self.config["input_depth"] or (n > 1 and z.shape[0] != n):
            lead = "B" if n == 1 else str(n)
            raise ValueError(f"z: expected shape ({lead}, {self.config['input_depth']}, H, W), "
                             f"got {tuple(z.shape)}")
        h, w = z.shape[-2:]
        m = self.multiple  # and at least 2m, so that BatchNorm sees >= 2x2 values at the bottom
        ph, pw = max(-h % m, 2 * m - h), max(-w % m, 2 * m - w)
        if ph or pw:
            z = _reflect_pad(z, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        if n > 1:
            z = z.reshape(1, -1, *z.shape[-2:])
        out = torch.sigmoid(self.head(self.body(z)))
        if n > 1:
            out = out.reshape(n, -1, *out.shape[-2:])
        if ph or pw:
            out = out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return out

    @classmethod
    def stack(cls, nets: Sequence[SkipNet]) -> SkipNet:
        """One grouped network computing ``nets`` (all single and of the same configuration)."""
        nets = list(nets)
        if not nets or any(not isinstance(n, SkipNet) or n.networks != 1 for n in nets):
            raise ValueError("nets: expected a non-empty list of single (networks=1) SkipNets")
        if any(n.config != nets[0].config for n in nets):
            raise ValueError("nets: all networks must have the same configuration")
        cfg = nets[0].config
        grouped = cls(**cfg, networks=len(nets))
        states = [n.state_dict() for n in nets]
        with torch.no_grad():
            for key, value in grouped.state_dict().items():
                value.copy_(torch.cat([s[key] for s in states], dim=0))
        return grouped.to(next(nets[0].parameters()).device)

    def unstack(self, index: int) -> SkipNet:
        """A copy of network ``index`` of a grouped network as a single SkipNet."""
        if not 0 <= index < self.networks:
            raise IndexError(f"index: {index} out of range for {self.networks} networks")
        single = SkipNet(**self.config)
        n = self.networks
        with torch.no_grad():
            for key, value in single.state_dict().items():
                full = self.state_dict()[key]
                value.copy_(full.reshape(n, -1, *full.shape[1:])[index].reshape(value.shape))
        return single.to(next(self.parameters()).device)

    def extra_repr(self) -> str:
        c = self.config
        return (f"channels={c['channels']}, skip_channels={c['skip_channels']}, "
                f"input_depth={c['input_depth']}, upsample={c['upsample']!r}, pad={c['pad']!r}, "
                f"networks={self.networks}")
