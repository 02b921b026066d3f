"""What a DIP fit is told (:class:`DIPConfig`), what it returns (:class:`DIPResult`) and what a
callback sees during it (:class:`FitState`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dipprior.dip.net import SkipNet
from dipprior.dip.stopping import MAX_WINDOW

__all__ = ["DIPConfig", "DIPResult", "FitState", "EARLY_STOPPING"]

EARLY_STOPPING = (None, "wmv", "discrepancy", "reference")

Tensor = torch.Tensor


@dataclass
class DIPConfig:
    """Everything :func:`fit` can be told; keyword arguments of ``fit`` override these fields.

    Network (the skip hourglass, :class:`~dipprior.dip.SkipNet`): ``channels`` per scale (int or
    one per scale; the reference uses 128), ``depth`` scales, ``skip_channels``, ``input_depth``
    (channels of z), ``upsample`` ("bilinear"/"nearest"), ``pad`` ("reflection"/"zero").

    Optimisation: ``iterations``, Adam ``lr``, ``reg_noise_std`` (std of the fresh perturbation
    of z each step; 0 disables), ``input_scale`` (z ~ U(0, input_scale)), ``ema`` (weight of the
    running average of the outputs that becomes the result; 0 = no averaging).

    Early stopping: ``early_stopping`` None, "wmv" (ES-WMV: ``wmv_window`` W, ``wmv_patience``
    P, ``wmv_storage`` where the window of W float16 frames lives: "auto" = on the fitting device
    unless it exceeds 256 MiB, then in pinned CPU memory; or "device"/"cpu") or "discrepancy"
    (stop when the loss averaged over ``discrepancy_window`` iterations reaches the noise level
    ``noise_sigma``, which defaults to the operator's and is estimated from the observation when
    unknown) or "reference" (stop ``reference_patience`` iterations after the output average came
    closest to ``fit(..., reference=...)``, an estimate of the clean image made without DIP; the
    pipeline passes its diffusion prior's restoration of the observation, so the rule needs
    neither the clean image nor the noise level).

    Spike recovery: ``spike_recovery`` on/off; a loss above ``spike_factor`` times the mean loss
    of the previous chunk of ``check_every`` iterations restores the last good state. The host
    looks at losses only once per chunk (no device synchronisation in between).

    Speed: ``channels_last`` memory format (None: on when the widest scale has >= 32 channels,
    where it measured faster; off for narrow networks, where it measured slower), ``compile`` the
    network with ``torch.compile`` (measured slower on CPU; see ``docs/dip.md``), ``autocast``
    the network's forward and backward passes to bfloat16 (the loss, the optimiser and the output
    average stay float32; see ``docs/dip.md`` for its measured speed and PSNR).

    Run: ``seed`` (network n of a batch uses ``seed + n``), ``device`` (None: CUDA if available,
    else CPU), ``progress`` bar.
    """

    channels: int | Sequence[int] = 64
    depth: int = 5
    skip_channels: int | Sequence[int] = 4
    input_depth: int = 32
    upsample: str = "bilinear"
    pad: str = "reflection"
    iterations: int = 3000
    lr: float = 0.01
    reg_noise_std: float = 1.0 / 30.0
    input_scale: float = 0.1
    ema: float = 0.99
    early_stopping: str | None = None
    wmv_window: int = 100
    wmv_patience: int = 1000
    wmv_storage: str = "auto"
    discrepancy_window: int = 50
    noise_sigma: float | None = None
    reference_patience: int = 200
    spike_recovery: bool = True
    spike_factor: float = 3.0
    check_every: int = 25
    channels_last: bool | None = None
    compile: bool = False
    autocast: bool = False
    seed: int = 0
    device: str | torch.device | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1, maximum: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (
                    maximum is not None and v > maximum):
                expected = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
                raise ValueError(f"{name}: expected an int {expected}, got {v!r}")

        for name in ("iterations", "wmv_patience", "reference_patience"):
            positive_int(name)
        # windows are buffers of that many values or frames: bounded, so a typo cannot exhaust
        # memory (depth and channels are bounded by the network check below)
        for name in ("check_every", "discrepancy_window"):
            positive_int(name, 1, MAX_WINDOW)
        positive_int("wmv_window", 2, MAX_WINDOW)
        def number(name: str, ok: Callable[[float], bool], expected: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and ok(v)):
                raise ValueError(f"{name}: expected {expected}, got {v!r}")

        number("lr", lambda v: v > 0, "a number > 0")
        number("reg_noise_std", lambda v: v >= 0, "a number >= 0")
        number("input_scale", lambda v: v > 0, "a number > 0")
        number("ema", lambda v: 0 <= v < 1, "a number in [0, 1)")
        number("spike_factor", lambda v: v > 1, "a number > 1")
        if self.early_stopping not in EARLY_STOPPING:
            raise ValueError(f"early_stopping: expected one of {EARLY_STOPPING}, got "
                             f"{self.early_stopping!r}")
        if self.noise_sigma is not None:
            number("noise_sigma", lambda v: 0 < v <= 1, "None or a number in (0, 1]")
        if self.wmv_storage not in ("auto", "device", "cpu"):
            raise ValueError(f"wmv_storage: expected 'auto', 'device' or 'cpu', "
                             f"got {self.wmv_storage!r}")
        for name in ("autocast", "compile", "spike_recovery"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an int, got {self.seed!r}")
        if not isinstance(self.channels, int):
            self.channels = tuple(self.channels)
        if not isinstance(self.skip_channels, int):
            self.skip_channels = tuple(self.skip_channels)
        with torch.device("meta"):  # validates the network options early, without allocating
            SkipNet(self.channels, self.depth, self.skip_channels, self.input_depth,
                    self.upsample, self.pad)

    def replace(self, **changes: Any) -> DIPConfig:
        """A copy with some fields changed; an unknown name raises TypeError naming it."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise TypeError(f"unknown DIP option {key!r} (valid: {', '.join(sorted(names))})")
        return dataclasses.replace(self, **changes)


@dataclass
class DIPResult:
    """What :func:`fit` returns for one observation.

    ``image`` is the output average at ``best_iteration`` (the last iteration; with early
    stopping the iteration the rule picked: the variance minimum for "wmv", the stopping
    iteration for "discrepancy"); ``last_image`` the network output for the unperturbed input
    after the last iteration. ``history`` holds per-iteration lists:
    ``loss`` always, ``psnr`` (of the average) and ``psnr_output`` (of the raw output) when a
    ground truth was given (for reporting only), ``variance`` (NaN until the window is full) with
    ES-WMV. ``iterations`` were run; ``stopped_at`` is the iteration where early
    stopping fired (None if it did not); ``restores`` the iterations at which a loss spike was
    undone; ``seconds`` the wall time of the whole (possibly batched) fit.
    """

    image: Tensor
    last_image: Tensor
    history: dict[str, list[float]]
    iterations: int
    stopped_at: int | None
    seconds: float
    best_iteration: int
    restores: list[int] = field(default_factory=list)
    config: DIPConfig | None = None


@dataclass
class FitState:
    """Handed to ``callback`` after every step; return True from the callback to stop."""

    iteration: int
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    output: Tensor  # raw network output of this step, (N, C, H, W), detached
    image: Tensor  # running average of the outputs, (N, C, H, W)
    loss: Tensor  # per-network data-fit loss of this step, (N,), on the device
