"""Fitting a Deep Image Prior to an observation: ``min_theta mean((A f_theta(z) - y)^2)``.

The defaults reproduce the reference code of Ulyanov et al. (``denoising.ipynb``): input
``z ~ U(0, 0.1)`` with 32 channels, a fresh ``N(0, (1/30)^2)`` perturbation of ``z`` every step,
Adam with lr 0.01, MSE loss, 3000 iterations, and an exponential average (0.99) of the outputs,
all in training mode. On top: ES-WMV early stopping, loss-spike recovery that needs no clean
image, and batched fitting of N independent networks in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from dipprior._seeds import DIP_INPUT_NOISE, stream_seed
from dipprior._tensor import default_device
from dipprior.dip.config import DIPConfig, DIPResult, FitState
from dipprior.dip.net import SkipNet, too_small
from dipprior.dip.stopping import WMV, Discrepancy, ReferenceDistance, SpikeGuard
from dipprior.estimators import estimate_noise_sigma
from dipprior.operators import Denoise, Operator, check_image

__all__ = ["build_network", "fit", "resolve_device", "use_channels_last"]

Tensor = torch.Tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` (checked: CUDA must exist) or CUDA when available, else CPU."""
    return default_device(device)


def use_channels_last(cfg: DIPConfig) -> bool:
    """The memory format rule: explicit, or NHWC for networks with >= 32 channels somewhere."""
    if cfg.channels_last is not None:
        return bool(cfg.channels_last)
    widest = cfg.channels if isinstance(cfg.channels, int) else max(cfg.channels)
    return widest >= 32


def _psnr(x: Tensor, gt: Tensor) -> Tensor:
    mse = (x.clamp(0, 1) - gt).square().mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse)


def build_network(cfg: DIPConfig, seed: int, shape: Sequence[int], out_channels: int = 3
                  ) -> tuple[SkipNet, Tensor]:
    """The network and its input ``z`` (1, input_depth, H, W) for ``seed``, made on the CPU.

    Initialisation and ``z`` come from one CPU random stream seeded with ``seed`` (the global RNG
    is left untouched), so they are the same on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SkipNet(cfg.channels, cfg.depth, cfg.skip_channels, cfg.input_depth,
                      cfg.upsample, cfg.pad, out_channels)
        z = torch.rand(1, cfg.input_depth, *shape[-2:]) * cfg.input_scale
    return net, z


def _resolve(config: DIPConfig | None, overrides: dict[str, Any]) -> DIPConfig:
    if config is None:
        config = DIPConfig()
    elif not isinstance(config, DIPConfig):
        raise TypeError(f"config: expected a DIPConfig, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def fit(
    observation: Tensor,
    operator: Operator | None = None,
    *,
    config: DIPConfig | None = None,
    ground_truth: Tensor | None = None,
    callback: Callable[[FitState], bool | None] | None = None,
    reference: Tensor | None = None,
    input_image: Tensor | None = None,
    **overrides: Any,
) -> DIPResult | list[DIPResult]:
    """Fit a DIP to ``observation`` through ``operator`` and return the restored image.

    ``observation`` is (C, H, W) -> one :class:`DIPResult`, or (N, C, H, W) -> a list of N
    results from N independent networks fitted together (network n seeded with ``seed + n``,
    so element n equals ``fit(observation[n], seed=seed + n)`` in distribution). ``operator``
    None means plain fitting (denoising with unknown noise). The network's output, hence
    ``result.image``, has the operator's input shape (for super-resolution the high-resolution
    shape). ``ground_truth`` only adds PSNR curves to the history; it never steers the fit.
    ``reference`` is the estimate of the clean image (same shape as the result, made without
    the clean image) that ``early_stopping="reference"`` compares the output average with.
    ``input_image`` (the result's shape, e.g. a classical restoration) makes the network's input
    informative: it replaces the first channels of the noise input ``z``.
    Options: a ``config`` and/or any :class:`DIPConfig` field as keyword argument. Fitting
    trains, so it runs with gradients on also when called under ``torch.no_grad()`` or
    ``torch.inference_mode()``. A fit that diverges (a non-finite loss the spike recovery cannot
    undo) raises ``FloatingPointError`` instead of returning NaN.

    Example:
        >>> import torch
        >>> from dipprior.dip import fit
        >>> from dipprior.operators import Denoise
        >>> y = Denoise(0.1).degrade(torch.rand(3, 24, 24), generator=torch.Generator())
        >>> r = fit(y, Denoise(0.1), channels=8, depth=3, iterations=5, progress=False)
        >>> r.image.shape
        torch.Size([3, 24, 24])
    """
    cfg = _resolve(config, overrides)
    op = operator if operator is not None else Denoise(0.0)
    if not isinstance(op, Operator):
        raise TypeError(f"operator: expected a dipprior Operator or None, got {type(op).__name__}")
    margin = 1.0 if operator is None else 0.5 + 6.0 * op.noise_sigma
    check_image(observation, "observation", low=-margin, high=1.0 + margin)
    single = observation.dim() == 3
    device = resolve_device(cfg.device)
    target = op.input_shape((observation.unsqueeze(0) if single else observation).shape)
    op.output_shape(target)  # validates divisibility and shapes before any work
    h, w = target[-2:]
    if too_small(h, w, cfg.depth):
        raise ValueError(
            f"observation: the restored image would be {h}x{w} pixels, too small for a DIP "
            f"network of depth {cfg.depth} (downsampling turns it into a constant and the fit "
            "diverges); images need a side of at least 4 pixels"
        )
    if (reference is None) != (cfg.early_stopping != "reference"):
        raise ValueError("reference: early_stopping='reference' needs reference=<an estimate of "
                         "the clean image>, and a reference is only used by that rule")
    if reference is not None:
        _check_like_result(reference, "reference", target, one_for_all=True)
    if ground_truth is not None:
        _check_like_result(ground_truth, "ground_truth", target)
    if input_image is not None:
        _check_like_result(input_image, "input_image", target, one_for_all=True)
        if input_image.shape[-3] > cfg.input_depth:
            raise ValueError(f"input_image: {input_image.shape[-3]} channels do not fit an "
                             f"input of input_depth={cfg.input_depth}")
    # Fitting trains whatever the caller's grad mode; tensors made under inference mode cannot
    # take part in autograd, so the inputs are cloned out of it.
    with torch.inference_mode(False), torch.enable_grad():
        y = _as_normal((observation.unsqueeze(0) if single else observation).to(
            device, torch.float32))
        gt = None
        if ground_truth is not None:
            gt = _as_normal((ground_truth.unsqueeze(0) if ground_truth.dim() == 3
                             else ground_truth).to(device, torch.float32))
        ref = None
        if reference is not None:
            ref = (reference if reference.dim() == 4 else reference.unsqueeze(0)).to(
                device, torch.float32).expand(target).clone()
        fitting = _Fit(cfg, op, y, target, gt, device, callback, operator is None, ref)
        if input_image is not None:
            image = input_image if input_image.dim() == 4 else input_image.unsqueeze(0)
            fitting.z[:, :image.shape[1]] = image.to(device, torch.float32)
        results = fitting.run()
    out_device = observation.device
    for r in results:
        r.image, r.last_image = r.image.to(out_device), r.last_image.to(out_device)
    return results[0] if single else results


def _check_like_result(x: Tensor, name: str, target: Sequence[int],
                       one_for_all: bool = False) -> None:
    """``x`` is a [0, 1] image of the result's shape (one per network, or one for all)."""
    check_image(x, name)
    shape = tuple(x.shape if x.dim() == 4 else (1, *x.shape))
    if shape[1:] != tuple(target[1:]) or shape[0] not in ((1, target[0]) if one_for_all
                                                          else (target[0],)):
        raise ValueError(f"{name}: shape {tuple(x.shape)} does not match the restored image "
                         f"shape {tuple(target)}")


def _as_normal(x: Tensor) -> Tensor:
    """``x``, or a copy of it when it is an inference tensor (call outside inference mode)."""
    return x.clone() if x.is_inference() else x


class _Fit:
    """One (possibly batched) fit; ``run`` returns one DIPResult per network."""

    def __init__(self, cfg: DIPConfig, op: Operator, y: Tensor, target: Sequence[int],
                 gt: Tensor | None, device: torch.device,
                 callback: Callable[[FitState], bool | None] | None, blind: bool,
                 reference: Tensor | None = None) -> None:
        self.cfg, self.op, self.y, self.gt, self.device = cfg, op, y, gt, device
        self.callback = callback
        n = self.n = y.shape[0]
        fmt = torch.channels_last if use_channels_last(cfg) else torch.contiguous_format
        built = [build_network(cfg, cfg.seed + i, target, y.shape[1]) for i in range(n)]
        net = built[0][0] if n == 1 else SkipNet.stack([b[0] for b in built])
        self.net = net.to(device, memory_format=fmt)
        self.z = torch.cat([b[1] for b in built]).to(device).contiguous(memory_format=fmt)
        self.noise = torch.empty_like(self.z)
        # the input noise's own stream: seeded with seed + i, its first draw would be the noise
        # of an observation degraded with that seed
        self.gens = [torch.Generator(device=device).manual_seed(
            stream_seed(cfg.seed + i, DIP_INPUT_NOISE)) for i in range(n)]
        self.model = torch.compile(self.net) if cfg.compile else self.net
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.image = torch.empty(target, device=device)
        k = cfg.check_every
        self.loss_buf = torch.zeros(k, n, device=device)
        self.psnr_buf = torch.zeros(2, k, n, device=device) if gt is not None else None
        self.stopper: WMV | Discrepancy | ReferenceDistance | None = None
        if cfg.early_stopping == "wmv":
            self.stopper = WMV(cfg.wmv_window, cfg.wmv_patience, target, device, cfg.wmv_storage)
        elif cfg.early_stopping == "discrepancy":
            self.stopper = Discrepancy(self._noise_floor(blind), cfg.discrepancy_window, device)
        elif cfg.early_stopping == "reference":
            self.stopper = ReferenceDistance(reference, cfg.reference_patience, device)
        # the per-step quantity a rule watches, kept in the history: WMV's variance, the distance
        self.curve = {WMV: "variance", ReferenceDistance: "distance"}.get(type(self.stopper))
        self.var_buf = torch.zeros(k, n, device=device) if self.curve is not None else None
        self.guard = (SpikeGuard(cfg.spike_factor, self.net, self.optimizer, [self.image], n)
                      if cfg.spike_recovery else None)
        self.history: list[dict[str, list[float]]] = [
            {"loss": []} | ({"psnr": [], "psnr_output": []} if gt is not None else {})
            | ({self.curve: []} if self.curve is not None else {}) for _ in range(n)]
        self.restores: list[list[int]] = [[] for _ in range(n)]

    def _noise_floor(self, blind: bool) -> Tensor:
        """The discrepancy threshold per network: sigma^2 times the fraction of noisy entries."""
        cfg, op, y = self.cfg, self.op, self.y
        if cfg.noise_sigma is not None:
            sigma = torch.full((self.n,), float(cfg.noise_sigma))
        elif op.noise_sigma > 0:
            sigma = torch.full((self.n,), op.noise_sigma)
        elif blind or op.identity:
            sigma = estimate_noise_sigma(y).cpu()
        else:
            raise ValueError("early_stopping: 'discrepancy' needs the noise level; give "
                             "noise_sigma=... or an operator with sigma > 0")
        with torch.no_grad():
            observed = (op.forward(torch.ones(self.image.shape[1:], device=self.device)) != 0)
        return sigma.square() * observed.float().mean().item()

    def _input(self) -> Tensor:
        std = self.cfg.reg_noise_std
        if std == 0:
            return self.z
        if self.n == 1:
            self.noise.normal_(generator=self.gens[0])
        else:
            for i, g in enumerate(self.gens):
                self.noise[i].normal_(generator=g)
        return torch.add(self.z, self.noise, alpha=std)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast)

    def step(self, t: int) -> Tensor:
        """One optimisation step; records loss, average and stopping state on the device."""
        with self._autocast():
            out = self.model(self._input())
        out = out.float()
        per_net = (self.op.forward(out) - self.y).square().mean(dim=(1, 2, 3))
        self.optimizer.zero_grad(set_to_none=True)
        per_net.sum().backward()  # a sum of per-network means: each network's own gradient
        self.optimizer.step()
        with torch.no_grad():
            out = out.detach()
            if t == 0 or self.cfg.ema == 0:
                self.image.copy_(out)
            else:
                self.image.lerp_(out, 1.0 - self.cfg.ema)
            k = t % self.cfg.check_every
            self.loss_buf[k] = per_net.detach()
            if self.psnr_buf is not None:
                self.psnr_buf[0, k] = _psnr(self.image, self.gt)
                self.psnr_buf[1, k] = _psnr(out, self.gt)
            if self.stopper is not None:
                self.stopper.update(t, out, per_net.detach(), self.image)
            if self.var_buf is not None:
                self.var_buf[k] = getattr(self.stopper, self.curve)
        return out

    def _flush(self, t: int) -> bool:
        """Move a chunk of records to the host, handle spikes; True if early stopping fired."""
        k = t % self.cfg.check_every + 1
        losses = self.loss_buf[:k].cpu()
        columns = {"loss": losses}
        if self.psnr_buf is not None:
            p = self.psnr_buf[:, :k].cpu()
            columns |= {"psnr": p[0], "psnr_output": p[1]}
        if self.var_buf is not None:
            columns[self.curve] = self.var_buf[:k].cpu()
        for i, h in enumerate(self.history):
            for key, col in columns.items():
                h[key].extend(col[:, i].tolist())
        restored = torch.zeros(self.n, dtype=torch.bool)
        if self.guard is not None:
            restored = self.guard.check(losses)
            if bool(restored.any()):
                for i in torch.nonzero(restored).flatten().tolist():
                    self.restores[i].append(t)
                if self.stopper is not None:
                    self.stopper.reset_window(restored)
        # a NaN/inf loss that was not undone (no recovery, or no good state yet to go back to)
        # leaves the weights non-finite for good: stop now rather than return NaN at the end
        lost = ~torch.isfinite(losses).all(0) & ~restored
        if bool(lost.any()):
            self._diverged(lost, f"the loss became NaN or inf by iteration {t}")
        return self.stopper is not None and self.stopper.poll()

    def _diverged(self, networks: Tensor, what: str) -> None:
        which = torch.nonzero(networks).flatten().tolist()
        whose = f" (batch images {which})" if self.n > 1 else ""
        raise FloatingPointError(
            f"observation: the DIP fit diverged{whose}: {what}"
            + ("" if self.guard is not None else " and spike_recovery is off")
            + "; try a lower lr or fewer channels"
        )

    def run(self) -> list[DIPResult]:
        cfg = self.cfg
        self.net.train()
        start = time.perf_counter()
        bar = tqdm(total=cfg.iterations, desc="DIP", unit="it", disable=not cfg.progress,
                   leave=False)
        done, t = 0, -1
        try:
            for t in range(cfg.iterations):
                out = self.step(t)
                stop = False
                if self.callback is not None:
                    state = FitState(t, self.net, self.optimizer, out, self.image,
                                     self.loss_buf[t % cfg.check_every])
                    stop = bool(self.callback(state))
                last = t == cfg.iterations - 1 or stop
                if (t + 1) % cfg.check_every == 0 or last:
                    stop = self._flush(t) or stop
                    bar.update(t + 1 - done)
                    done = t + 1
                    bar.set_postfix(loss=f"{self.history[0]['loss'][-1]:.3g}", refresh=False)
                    if stop:
                        break
        finally:
            bar.close()
        with torch.no_grad():
            with self._autocast():
                final = self.model(self.z)
        return self._results(final, t + 1, start)

    def _results(self, final: Tensor, iterations: int, start: float) -> list[DIPResult]:
        image, best_it = self.image, [iterations - 1] * self.n
        stopped: list[int | None] = [None] * self.n
        st = self.stopper
        if st is not None and st.best_image is not None:
            found = st.best_iteration.cpu().tolist()
            stops = st.stop_iteration.cpu().tolist()
            mask = torch.tensor([b >= 0 for b in found], device=self.device)
            image = torch.where(mask.view(-1, 1, 1, 1), st.best_image, self.image)
            best_it = [b if b >= 0 else best_it[i] for i, b in enumerate(found)]
            stopped = [s if s >= 0 else None for s in stops]
        image = image.float().contiguous()
        final = final.float().contiguous()
        bad = ~(torch.isfinite(image).flatten(1).all(1) & torch.isfinite(final).flatten(1).all(1))
        if bool(bad.any()):
            self._diverged(bad.cpu(), "the restored image is not finite")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return [DIPResult(image=image[i], last_image=final[i], history=self.history[i],
                          iterations=iterations, stopped_at=stopped[i], seconds=seconds,
                          best_iteration=best_it[i], restores=self.restores[i], config=self.cfg)
                for i in range(self.n)]
