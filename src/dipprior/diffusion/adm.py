"""The ADM UNet of OpenAI's guided-diffusion, with its parameter names, so its checkpoints load.

The architecture is Dhariwal & Nichol's "ADM" (Diffusion Models Beat GANs on Image Synthesis,
2021; github.com/openai/guided-diffusion, ``guided_diffusion/unet.py``, MIT licence), the prior
that DPS, DiffPIR, DDRM, PiGDM and deepinv's diffusion solvers run: ResBlocks with scale-shift
GroupNorm conditioning and residual up/down-sampling, multi-head QKV attention at chosen
down-sampling factors, and a learned-variance head (6 output channels).  Written anew here;
module and parameter names follow guided-diffusion's so that ``load_state_dict`` maps one-to-one.

``ADMUNet(x, t)`` returns the noise prediction (the first 3 channels) like every dipprior prior;
``return_variance=True`` also returns the variance channels.  Any H and W: the input is padded
to the network's multiple and the output cropped back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dipprior.diffusion.unet import pad_to_multiple, timestep_embedding

__all__ = ["ADMUNet"]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, eps 1e-5) computed in float32 whatever the input dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Upsample(nn.Module):
    """Nearest 2x up-sampling, optionally followed by a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """A strided 3x3 convolution or a 2x2 average pool (``op``)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = (nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """norm-SiLU-conv, timestep conditioning (added, or scale-shift of the second norm),
    norm-SiLU-dropout-conv, plus the skip; ``up``/``down`` resample inside the block."""

    def __init__(self, channels: int, emb_channels: int, dropout: float,
                 out_channels: int | None = None, *, use_scale_shift_norm: bool = False,
                 up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm
                                 else out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels.

    ``legacy_order`` (guided-diffusion's default, used by its published checkpoints) splits the
    1x1 ``qkv`` output into heads first and then into q, k, v; otherwise into q, k, v first.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 legacy_order: bool = True) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"num_head_channels: {num_head_channels} does not divide the "
                                 f"{channels} channels of an attention block")
            self.num_heads = channels // num_head_channels
        if self.num_heads < 1 or channels % self.num_heads:
            raise ValueError(f"num_heads: {self.num_heads} does not divide the {channels} "
                             "channels of an attention block")
        self.legacy_order = legacy_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        heads, length = self.num_heads, x.shape[-1]
        ch = c // heads
        if self.legacy_order:
            q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
        else:
            q, k, v = (part.reshape(b * heads, ch, length) for part in qkv.chunk(3, dim=1))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2))
        h = self.proj_out(out.transpose(1, 2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence whose ResBlocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (unconditional), returning epsilon to the sampler.

    Args:
        model_channels: base width (256 for ImageNet 256x256, 128 for FFHQ 256x256).
        num_res_blocks: ResBlocks per level.
        channel_mult: width multiplier per level (its length sets the down-sampling depth).
        attention_ds: down-sampling factors with self-attention (image_size // resolution in
            guided-diffusion's flags: ``"32,16,8"`` at 256 px -> (8, 16, 32)).
        in_channels, out_channels: image channels; ``out_channels == 2 * in_channels`` is the
            learned-variance head.
        num_heads, num_head_channels, num_heads_upsample: attention heads as in
            guided-diffusion (``num_head_channels`` > 0 overrides ``num_heads``).
        use_scale_shift_norm, resblock_updown, conv_resample, use_new_attention_order,
        dropout: guided-diffusion's flags of the same names.

    ``autocast`` (an attribute, default ``None``) runs the torso (input, middle and output
    blocks) under ``torch.autocast(dtype=autocast)``, e.g. ``torch.bfloat16``, as
    guided-diffusion's ``use_fp16`` does: the timestep embedding, the output layers, GroupNorm
    and the attention softmax stay float32.
    """

    def __init__(self, *, model_channels: int, num_res_blocks: int,
                 channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
                 attention_ds: Sequence[int] = (8, 16, 32), in_channels: int = 3,
                 out_channels: int = 6, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = True,
                 resblock_updown: bool = True, conv_resample: bool = True,
                 use_new_attention_order: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        channel_mult = tuple(float(m) if not float(m).is_integer() else int(m)
                             for m in channel_mult)
        attention_ds = tuple(sorted(int(d) for d in attention_ds))
        for name, value in (("model_channels", model_channels),
                            ("num_res_blocks", num_res_blocks), ("in_channels", in_channels),
                            ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not channel_mult or any(m <= 0 for m in channel_mult):
            raise ValueError(f"channel_mult: expected positive multipliers, got {channel_mult}")
        for name, value in (("num_heads", num_heads), ("num_head_channels", num_head_channels),
                            ("num_heads_upsample", num_heads_upsample)):
            allow_unset = name != "num_heads"  # -1: unset (guided-diffusion's convention)
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    value >= 1 or (allow_unset and value == -1)):
                raise ValueError(f"{name}: expected a positive integer"
                                 f"{' or -1 (unset)' if allow_unset else ''}, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.config: dict[str, Any] = {
            "model_channels": model_channels, "num_res_blocks": num_res_blocks,
            "channel_mult": list(channel_mult), "attention_ds": list(attention_ds),
            "in_channels": in_channels, "out_channels": out_channels, "num_heads": num_heads,
            "num_head_channels": num_head_channels, "num_heads_upsample": num_heads_upsample,
            "use_scale_shift_norm": use_scale_shift_norm, "resblock_updown": resblock_updown,
            "conv_resample": conv_resample,
            "use_new_attention_order": use_new_attention_order, "dropout": dropout}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels = model_channels
        self.multiple = 2 ** (len(channel_mult) - 1)
        self.autocast: torch.dtype | None = None
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_ch = 4 * model_channels

        def res(ch_in: int, ch_out: int | None = None, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, emb_ch, dropout, ch_out,
                            use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, not use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(),
                                        nn.Linear(emb_ch, emb_ch))
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    res(ch, down=True) if resblock_updown else Downsample(ch, conv_resample)))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch, num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(res(ch, up=True) if resblock_updown
                                  else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 _zero(nn.Conv2d(input_ch, out_channels, 3, padding=1)))

    @property
    def learned_variance(self) -> bool:
        """Whether the last channels are guided-diffusion's variance interpolation values."""
        return self.out_channels == 2 * self.in_channels

    def forward(self, x: torch.Tensor, t: int | float | torch.Tensor, *,
                return_variance: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Epsilon for ``x`` (N, C, H, W) at timesteps ``t`` (a number or an (N,) tensor), on
        guided-diffusion's scale (integer timesteps 0..T-1).  ``return_variance=True`` returns
        ``(epsilon, variance_values)`` (the raw values in [-1, 1] that interpolate between
        beta_t and the posterior variance in log space)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected shape (N, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if return_variance and not self.learned_variance:
            raise ValueError("return_variance: this ADMUNet has no variance head "
                             f"(out_channels={self.out_channels})")
        n, (h_in, w_in) = x.shape[0], x.shape[-2:]
        t = torch.as_tensor(t, device=x.device)
        t = t.reshape(1).expand(n) if t.numel() == 1 else t
        if t.shape != (n,):
            raise ValueError(f"t: expected a number or shape ({n},), got {tuple(t.shape)}")
        out = self._unet(pad_to_multiple(x, self.multiple), t)
        out = out[..., :h_in, :w_in].to(x.dtype)
        eps = out[:, :self.in_channels]
        return (eps, out[:, self.in_channels:]) if return_variance else eps

    def _unet(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.model_channels, cos_first=True))
        # as guided-diffusion's use_fp16: the torso in low precision, the embedding and the
        # output layers in float32; no autocast set leaves the caller's own in force
        torso = (torch.autocast(x.device.type, dtype=self.autocast) if self.autocast is not None
                 else contextlib.nullcontext())
        with torso:
            hs = []
            h = x
            for module in self.input_blocks:
                h = module(h, emb)
                hs.append(h)
            h = self.middle_block(h, emb)
            for module in self.output_blocks:
                h = module(torch.cat([h, hs.pop()], dim=1), emb)
        if self.autocast is not None:
            with torch.autocast(x.device.type, enabled=False):
                return self.out(h.float())
        return self.out(h)
