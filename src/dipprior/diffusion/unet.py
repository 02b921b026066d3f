"""A DDPM-style UNet (Ho et al. 2020) that runs on any image size."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0, *,
                       cos_first: bool = False) -> torch.Tensor:
    """Sinusoidal embedding ``[sin(t f_k), cos(t f_k)]`` of (N,) timesteps -> (N, dim);
    ``cos_first``: ``[cos, sin]``, guided-diffusion's order."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                            dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    parts = [torch.cos(args), torch.sin(args)] if cos_first else [torch.sin(args), torch.cos(args)]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad H and W of ``x`` at the bottom/right up to a multiple of ``multiple`` and at least
    ``minimum`` (reflect; replicate when the image is smaller than the padding)."""
    h, w = x.shape[-2:]
    ph, pw = max(-h % multiple, minimum - h), max(-w % multiple, minimum - w)
    ph, pw = ph + -(h + ph) % multiple, pw + -(w + pw) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, or within windows of ``window`` x ``window``
    pixels when the input is larger (``window=None``: always global)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))
        self.window: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(self.norm(x))
        h, w = x.shape[-2:]
        if self.window is None or (h <= self.window and w <= self.window):
            return x + self.proj(_attend(qkv))
        out = torch.empty_like(x)
        rows, cols = _windows(h, self.window), _windows(w, self.window)
        for r0, r1 in rows:
            for c0, c1 in cols:
                out[..., r0:r1, c0:c1] = _attend(qkv[..., r0:r1, c0:c1])
        return x + self.proj(out)


def _attend(qkv: torch.Tensor) -> torch.Tensor:
    """Single-head attention of a (N, 3C, H, W) query-key-value map -> (N, C, H, W)."""
    n, c3, h, w = qkv.shape
    c = c3 // 3
    # contiguous (N, 1, HW, C) operands: the fused CPU kernel instead of the 3x slower math path
    q, k, v = qkv.reshape(n, 3, 1, c, h * w).transpose(-1, -2).contiguous().unbind(1)
    out = F.scaled_dot_product_attention(q, k, v)[:, 0]
    return out.transpose(-1, -2).reshape(n, c, h, w)


def _windows(size: int, window: int) -> list[tuple[int, int]]:
    """``size`` cut into the fewest near-equal spans of at most ``window``."""
    count = -(-size // window)
    edges = [round(i * size / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# sane upper bounds, checked before anything is allocated (a 4096-channel level is already
# far beyond any published DDPM UNet)
MAX_CHANNELS = 4096
MAX_RES_BLOCKS = 32
MAX_LEVELS = 8


class UNet(nn.Module):
    """DDPM-style UNet: ``forward(x, t)`` returns the prediction with the shape of ``x``.

    Args:
        in_channels: image channels (the output has the same number).
        base_channels: channels at full resolution; level ``i`` has ``base * channel_mults[i]``.
        channel_mults: one entry per resolution level; there are ``len - 1`` down-samplings.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: *down-sampling factors* (1 = full resolution, 2 = after the first
            down-sampling, ...) at which a self-attention block follows each residual block.
            Factors rather than pixel sizes, because the network runs on any image size.
        dropout: dropout rate inside the residual blocks.

    Any height and width work: the input is padded (reflect, or replicate when too small) up to a
    multiple of ``2 ** (len(channel_mults) - 1)`` and the output cropped back.

    Example:
        >>> net = UNet(base_channels=32)
        >>> net(torch.randn(2, 3, 37, 50), torch.tensor([10, 500])).shape
        torch.Size([2, 3, 37, 50])
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        for name, value, top in (("in_channels", in_channels, MAX_CHANNELS),
                                 ("base_channels", base_channels, MAX_CHANNELS),
                                 ("num_res_blocks", num_res_blocks, MAX_RES_BLOCKS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an int in [1, {top}], got {value!r}")
        if not channel_mults or min(channel_mults) < 1 or len(channel_mults) > MAX_LEVELS \
                or base_channels * max(channel_mults) > MAX_CHANNELS:
            raise ValueError(f"channel_mults must be 1 to {MAX_LEVELS} positive ints with "
                             f"base_channels * mult <= {MAX_CHANNELS}, got {channel_mults}")
        factors = {2**i for i in range(len(channel_mults))}
        if not set(attention_resolutions) <= factors:
            raise ValueError(f"attention_resolutions must be down-sampling factors in "
                             f"{sorted(factors)}, got {attention_resolutions}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "base_channels": base_channels,
            "channel_mults": list(channel_mults), "num_res_blocks": num_res_blocks,
            "attention_resolutions": list(attention_resolutions), "dropout": dropout,
        }
        self.in_channels = in_channels
        self.multiple = 2 ** (len(channel_mults) - 1)
        # a dtype runs the torso under torch.autocast (diffusion.precision); None: float32
        self.autocast: torch.dtype | None = None
        emb_ch = 4 * base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, emb_ch), nn.SiLU(),
                                        nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, factor = [base_channels], base_channels, 1
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(self._block(ch, base_channels * mult, emb_ch, dropout,
                                             factor in attention_resolutions))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                factor *= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_ch, dropout), AttnBlock(ch),
                                  ResBlock(ch, ch, emb_ch, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._block(ch + skips.pop(), base_channels * mult, emb_ch,
                                           dropout, factor in attention_resolutions))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
                factor //= 2
        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, in_channels, 3, padding=1))
        self.base_channels = base_channels
        self._attention_window: int | None = None
        self._channels_last = False

    @staticmethod
    def _block(in_ch: int, out_ch: int, emb_ch: int, dropout: float, attn: bool) -> nn.Module:
        res = ResBlock(in_ch, out_ch, emb_ch, dropout)
        return _ResAttn(res, AttnBlock(out_ch)) if attn else _ResAttn(res, None)

    @property
    def channels_last(self) -> bool:
        """Run the convolutions on channels-last tensors (weights and activations): the same
        arithmetic in another memory order, measured faster on CPUs for large inputs
        (``benchmarks/bench_nfe.py``); the output is returned contiguous."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"channels_last: expected a bool, got {on!r}")
        self._channels_last = on
        self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    @property
    def attention_window(self) -> int | None:
        """Self-attention within windows of this many *input* pixels a side (None: global).

        Global attention costs the square of the pixel count; a prior trained on small patches
        never saw more tokens than a patch holds, so windows at least the patch size change
        little and make large tiles linear in their pixels (``docs/diffusion.md``)."""
        return self._attention_window

    @attention_window.setter
    def attention_window(self, pixels: int | None) -> None:
        if pixels is not None and (isinstance(pixels, bool) or not isinstance(pixels, int)
                                   or pixels < self.multiple):
            raise ValueError(f"attention_window: expected None or an int >= {self.multiple} "
                             f"(pixels), got {pixels!r}")
        self._attention_window = pixels
        factor = 1
        for block in self.down:
            if isinstance(block, Downsample):
                factor *= 2
            elif block.attn is not None:
                block.attn.window = None if pixels is None else max(pixels // factor, 1)
        self.mid[1].window = None if pixels is None else max(pixels // factor, 1)
        for block in self.up:
            if isinstance(block, Upsample):
                factor //= 2
            elif block.attn is not None:
                block.attn.window = None if pixels is None else max(pixels // factor, 1)

    def _timesteps(self, t: int | float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not isinstance(t, torch.Tensor):
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise TypeError(f"t must be a number or a tensor, got {type(t).__name__}")
            return torch.full((n,), float(t), device=x.device)
        if t.numel() == 1:
            return t.reshape(1).to(x.device).expand(n)
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"t must be a scalar or have shape ({n},), got {tuple(t.shape)}")
        return t.to(x.device)

    def forward(self, x: torch.Tensor, t: int | float | torch.Tensor) -> torch.Tensor:
        """Predict from ``x`` (N, C, H, W) at timestep(s) ``t`` (a number or an (N,) tensor)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h_in, w_in = x.shape[-2:]
        emb = self.time_embed(timestep_embedding(self._timesteps(t, x), self.base_channels)
                              .to(x.dtype))
        # at least 2x2 at the coarsest level: GroupNorm needs more than one value per group
        x = pad_to_multiple(x, self.multiple, 2 * self.multiple)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        torso = (torch.autocast(x.device.type, dtype=self.autocast) if self.autocast is not None
                 else contextlib.nullcontext())
        with torso:
            h = self.conv_in(x)
            hs = [h]
            for block in self.down:
                h = block(h, emb) if isinstance(block, _ResAttn) else block(h)
                hs.append(h)
            h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
            for block in self.up:
                if isinstance(block, _ResAttn):
                    h = block(torch.cat([h, hs.pop()], dim=1), emb)
                else:
                    h = block(h)
        if self.autocast is not None:  # the output layer in the input's dtype, as ADMUNet's
            with torch.autocast(x.device.type, enabled=False):
                h = self.conv_out(F.silu(self.norm_out(h.to(x.dtype))))
        else:
            h = self.conv_out(F.silu(self.norm_out(h)))
        return h[..., :h_in, :w_in].contiguous()


class _ResAttn(nn.Module):
    """A residual block optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h)
