"""Early stopping and loss-spike recovery for DIP fits, none of which looks at a clean image.

- :class:`WMV` is ES-WMV of Wang et al., "Early Stopping for Deep Image Prior" (2021): the
  variance of the network outputs over a sliding window of ``W`` iterations,
  ``VAR_t = 1/W sum_w mean_pixels (x_w - mean_window)^2``; stop once ``P`` iterations pass
  without a new minimum and return the image at the minimum. It runs entirely on the device (no
  host synchronisation per step): the window is a ring buffer of float16 frames with float64
  running sums.
- :class:`Discrepancy` is Morozov's discrepancy principle: stop once the data-fit loss (a moving
  average over a window) has come down to the noise level, ``mean((A f - y)^2) <= sigma^2 * q``
  (``q`` the fraction of observed entries), the point where the network starts fitting noise.
  ``sigma`` is the operator's, or estimated from the observation (:func:`estimate_noise_sigma`).
- :class:`ReferenceDistance` watches the distance of the output average to a reference estimate
  of the clean image made without DIP (in :mod:`dipprior.pipeline`, the diffusion prior's own
  restoration of the observation): the distance falls while the network fits the image and
  rises once it fits noise the reference does not have; stop ``P`` iterations after its minimum
  and return the average at the minimum.  Needs neither the clean image nor the noise level.
- :class:`SpikeGuard` watches the data-fit loss in chunks and, when it jumps far above its recent
  level, restores the last good weights, optimizer state and output average.

Both handle ``N`` independent networks fitted together (one value per network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["WMV", "Discrepancy", "ReferenceDistance", "SpikeGuard", "discrepancy_stop_point",
           "wmv_stop_point"]

#: a window larger than this (bytes) is kept in pinned CPU memory when fitting on an accelerator
WMV_DEVICE_BUDGET = 256 * 2**20
#: the longest window (iterations) of either rule; the reference ES-WMV window is 100
MAX_WINDOW = 10_000


def wmv_stop_point(variances: Sequence[float], patience: int) -> tuple[int | None, int | None]:
    """ES-WMV's decision on a sequence of windowed variances (NaN = window not yet full).

    Returns ``(best, stop)``: the index of the running minimum when the rule fires and the index
    where it fires (``patience`` indices without a strictly smaller variance), or
    ``(best, None)`` when it never fires (``best`` is None if no variance was finite).

    Example:
        >>> wmv_stop_point([5, 3, 2, 4, 4, 4, 1], patience=3)
        (2, 5)
    """
    best, best_value, wait = None, math.inf, 0
    for t, v in enumerate(variances):
        if not math.isfinite(v):
            continue
        if v < best_value:
            best, best_value, wait = t, v, 0
        else:
            wait += 1
            if wait >= patience:
                return best, t
    return best, None


def discrepancy_stop_point(losses: Sequence[float], threshold: float, window: int) -> int | None:
    """The :class:`Discrepancy` rule on a recorded loss sequence: the first index whose mean over
    the last ``window`` losses is <= ``threshold`` (None if there is none).

    Example:
        >>> discrepancy_stop_point([4, 3, 2, 1, 1], threshold=1.5, window=2)
        3
    """
    total = 0.0
    for t, v in enumerate(losses):
        total += v - (losses[t - window] if t >= window else 0.0)
        if t >= window - 1 and total / window <= threshold:
            return t
    return None


class WMV:
    """Windowed moving variance early stopping for ``n`` networks with outputs of ``shape``.

    Call :meth:`update` once per iteration with the raw outputs and the images to keep (the
    output average); it only queues device work. :meth:`poll` synchronises and tells whether
    every network has stopped.
    """

    def __init__(self, window: int, patience: int, shape: Sequence[int], device: torch.device,
                 storage: str = "auto") -> None:
        if not 2 <= window <= MAX_WINDOW:
            raise ValueError(f"wmv_window: expected an int in 2..{MAX_WINDOW}, got {window}")
        if patience < 1:
            raise ValueError(f"wmv_patience: must be >= 1, got {patience}")
        if storage not in ("auto", "device", "cpu"):
            raise ValueError(f"wmv_storage: expected 'auto', 'device' or 'cpu', got {storage!r}")
        self.window, self.patience = window, patience
        self.device = device
        n = shape[0]
        frame_bytes = 2 * math.prod(shape)
        if storage == "auto":
            on_cpu = device.type != "cpu" and window * frame_bytes > WMV_DEVICE_BUDGET
        else:
            on_cpu = storage == "cpu" and device.type != "cpu"
        pin = on_cpu and device.type == "cuda"
        self.buffer = torch.zeros((window, *shape), dtype=torch.float16,
                                  device="cpu" if on_cpu else device, pin_memory=pin)
        acc = torch.float32 if device.type == "mps" else torch.float64
        self.sum = torch.zeros(shape, dtype=acc, device=device)
        self.sum_sq = torch.zeros(shape, dtype=acc, device=device)
        self.count = torch.zeros(n, dtype=torch.long, device=device)
        self.variance = torch.full((n,), math.nan, device=device)
        self.best_variance = torch.full((n,), math.inf, device=device)
        self.best_iteration = torch.full((n,), -1, dtype=torch.long, device=device)
        self.stop_iteration = torch.full((n,), -1, dtype=torch.long, device=device)
        self.stopped = torch.zeros(n, dtype=torch.bool, device=device)
        self.best_image: torch.Tensor | None = None
        self._pos = 0
        self._view = (n,) + (1,) * (len(shape) - 1)

    def update(self, iteration: int, output: torch.Tensor, loss: torch.Tensor,
               image: torch.Tensor) -> None:
        """Add ``output`` (N, C, H, W) to the window; remember ``image`` at a new minimum."""
        frame = output.detach().to(torch.float16)
        slot = self.buffer[self._pos]
        old = slot.to(self.device, non_blocking=True).to(self.sum.dtype)
        slot.copy_(frame, non_blocking=True)
        self._pos = (self._pos + 1) % self.window
        full_before = (self.count >= self.window).view(self._view)
        new = frame.to(self.sum.dtype)
        old = torch.where(full_before, old, 0.0)
        self.sum.add_(new - old)
        self.sum_sq.add_(new * new - old * old)
        self.count.add_(1)
        w = self.window
        var = (self.sum_sq / w - (self.sum / w) ** 2).flatten(1).mean(1).float()
        full = self.count >= w
        self.variance = torch.where(full, var, math.nan)
        better = full & (var < self.best_variance) & ~self.stopped
        self.best_variance = torch.where(better, var, self.best_variance)
        self.best_iteration = torch.where(better, iteration, self.best_iteration)
        if self.best_image is None:
            self.best_image = image.detach().clone()
        else:
            self.best_image = torch.where(better.view(self._view), image.detach(), self.best_image)
        fire = full & ~better & ~self.stopped & (self.best_iteration >= 0) & (
            iteration - self.best_iteration >= self.patience)
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.stopped = self.stopped | fire

    def reset_window(self, networks: torch.Tensor) -> None:
        """Empty the window of the networks in the boolean mask (e.g. after a restore)."""
        keep = ~networks.to(self.device)
        self.count.mul_(keep)
        self.sum.mul_(keep.view(self._view))
        self.sum_sq.mul_(keep.view(self._view))

    def poll(self) -> bool:
        """Whether every network has stopped (synchronises with the device)."""
        return bool(self.stopped.all())


def _init_decision(rule: object, n: int, device: torch.device) -> None:
    """A rule's per-network decision state: none chosen, none stopped."""
    rule.best_iteration = torch.full((n,), -1, dtype=torch.long, device=device)
    rule.stop_iteration = rule.best_iteration.clone()
    rule.stopped = torch.zeros(n, dtype=torch.bool, device=device)
    rule.best_image = None


class Discrepancy:
    """Stop when the windowed mean of the loss reaches ``threshold`` (one value per network).

    Same interface as :class:`WMV`; the returned image is the one at the stopping iteration.
    """

    def __init__(self, threshold: torch.Tensor, window: int, device: torch.device) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"discrepancy_window: expected an int in 1..{MAX_WINDOW}, "
                             f"got {window}")
        n = threshold.numel()
        self.threshold = threshold.to(device, torch.float32).reshape(n)
        self.window, self.count = window, 0
        self.ring = torch.zeros(window, n, device=device)
        _init_decision(self, n, device)

    def update(self, iteration: int, output: torch.Tensor, loss: torch.Tensor,
               image: torch.Tensor) -> None:
        self.ring[iteration % self.window] = loss.detach().float()
        self.count += 1
        if self.best_image is None:
            self.best_image = image.detach().clone()
        if self.count < self.window:
            return
        fire = (self.ring.mean(0) <= self.threshold) & ~self.stopped
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.best_iteration = self.stop_iteration
        self.best_image = torch.where(fire.view(-1, *(1,) * (image.dim() - 1)), image.detach(),
                                      self.best_image)
        self.stopped = self.stopped | fire

    def reset_window(self, networks: torch.Tensor) -> None:
        """Nothing to reset: spiking losses only delay the rule."""

    def poll(self) -> bool:
        return bool(self.stopped.all())


class ReferenceDistance:
    """Stop ``patience`` iterations after the minimum of ``mean((image - reference)^2)``.

    ``reference`` is (N, C, H, W) (one per network) or broadcastable to the output average.
    Same interface as :class:`WMV`; the returned image is the average at the minimum.  Replay on
    a record with :func:`wmv_stop_point` (the same running-minimum-with-patience rule).
    """

    def __init__(self, reference: torch.Tensor, patience: int, device: torch.device) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"reference_patience: expected an int >= 1, got {patience!r}")
        self.reference = reference.detach().to(device, torch.float32)
        self.patience = patience
        n = self.reference.shape[0]
        self.distance = torch.full((n,), math.inf, device=device)
        self.best_distance = torch.full((n,), math.inf, device=device)
        _init_decision(self, n, device)

    def update(self, iteration: int, output: torch.Tensor, loss: torch.Tensor,
               image: torch.Tensor) -> None:
        image = image.detach()
        self.distance = (image.float() - self.reference).square().flatten(1).mean(1)
        better = (self.distance < self.best_distance) & ~self.stopped
        self.best_distance = torch.where(better, self.distance, self.best_distance)
        self.best_iteration = torch.where(better, iteration, self.best_iteration)
        if self.best_image is None:
            self.best_image = image.clone()
        else:
            self.best_image = torch.where(better.view(-1, *(1,) * (image.dim() - 1)), image,
                                          self.best_image)
        fire = ~better & ~self.stopped & (iteration - self.best_iteration >= self.patience)
        self.stop_iteration = torch.where(fire, iteration, self.stop_iteration)
        self.stopped = self.stopped | fire

    def reset_window(self, networks: torch.Tensor) -> None:
        """Nothing to reset: a restored state is judged by its distance like any other."""

    def poll(self) -> bool:
        return bool(self.stopped.all())


class SpikeGuard:
    """Loss-spike detection and restore, checked every chunk of iterations.

    A loss is a spike when it exceeds ``factor`` times the mean loss of the last good chunk (or
    is not finite). Two snapshots are kept: the one taken at the end of the last good chunk and
    the one before; if the very first loss of a chunk spikes, the last snapshot itself may hold
    the bad step, so the older one is restored. Snapshots hold parameters, buffers, the Adam state
    and the output average, per network for grouped networks (the ``step`` count is restored only
    when all networks are).
    """

    def __init__(self, factor: float, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 extra: Sequence[torch.Tensor], networks: int) -> None:
        if not factor > 1:
            raise ValueError(f"spike_factor: must be > 1, got {factor}")
        self.factor, self.n = float(factor), networks
        self.module, self.optimizer = module, optimizer
        self.extra = list(extra)
        self.reference: torch.Tensor | None = None  # per-network loss level
        self.slots: list[list[torch.Tensor] | None] = [None, None]  # [older, last]

    def _tensors(self) -> list[torch.Tensor]:
        ts = [t for t in self.module.state_dict(keep_vars=True).values() if t.numel()]
        for state in self.optimizer.state.values():
            ts.extend(v for k, v in sorted(state.items()) if k != "step" and torch.is_tensor(v))
        return [t.data if isinstance(t, torch.nn.Parameter) else t for t in ts] + self.extra

    def _steps(self) -> list[torch.Tensor]:
        return [s["step"] for s in self.optimizer.state.values() if torch.is_tensor(s.get("step"))]

    def snapshot(self) -> None:
        """Record the current state as the last good one (the previous becomes the older)."""
        older = self.slots[0]
        tensors = self._tensors() + self._steps()
        if older is None or len(older) != len(tensors):
            new = [t.detach().clone() for t in tensors]
        else:
            new = older
            with torch.no_grad():
                for dst, src in zip(new, tensors, strict=True):
                    dst.copy_(src)
        self.slots = [self.slots[1], new]

    def _copy(self, dst: list[torch.Tensor], src: list[torch.Tensor], mask: torch.Tensor) -> None:
        """dst <- src for the networks in ``mask`` (everything, step counts included, if all)."""
        with torch.no_grad():
            if bool(mask.all()):
                for d, s in zip(dst, src, strict=True):
                    d.copy_(s)
                return
            m = mask.to(dst[0].device)
            for d, s in zip(dst, src, strict=False):
                if d.numel() % self.n == 0 and d.numel() > 1:
                    d.view(self.n, -1)[m] = s.view(self.n, -1)[m]

    def check(self, losses: torch.Tensor) -> torch.Tensor:
        """Inspect a chunk of losses (K, N) on the CPU, restore spiking networks, snapshot.

        Returns the boolean mask (N,) of the networks that were restored.
        """
        losses = losses.double().reshape(losses.shape[0], self.n)
        restored = torch.zeros(self.n, dtype=torch.bool)
        older, last = self.slots
        if self.reference is not None and last is not None:
            bad = ~(losses <= self.factor * self.reference)  # NaN counts as a spike
            restored = bad.any(0)
            if bool(restored.any()):
                first = bad[0]
                if bool(first.any()) and older is not None:
                    self._copy(last, older, first)  # the last snapshot holds the bad step
                self._copy(self._tensors() + self._steps(), last, restored)
        good = ~restored
        chunk_mean = losses.mean(0)
        self.reference = chunk_mean if self.reference is None else torch.where(
            good, chunk_mean, self.reference)
        self.snapshot()
        return restored
