"""Test-time adaptation of the prior to one observation: a Deep Image Prior inside the prior.

Steerable Conditional Diffusion (Barbano et al. 2023) and Deep Diffusion Image Prior (DDIP,
Chung and Ye 2024) fine-tune a few of the diffusion model's parameters on the measurement while
the reverse chain runs, so a prior trained elsewhere fits the image at hand.  Here:

* the adapted parameters are low-rank (LoRA) updates ``W + B A`` of every convolution and linear
  layer but the first and last convolution (``B = 0`` at the start, so the adapted model starts
  as the prior, exactly), on a copy of the model: the caller's weights never change;
* the loss is measurement consistency of the denoised estimate, ``||A D(x_t) - y||^2`` (the
  Tweedie ``x0`` of the chain's current state, unclamped), for every task but Gaussian
  denoising, where ``A = I`` makes it minimal at ``D(x_t) = y`` (the noise itself);
* there the loss is recorrupted-to-recorrupted (R2R, Pang et al. 2021):
  ``y_hat = y + alpha s z``, ``y_bar = y - s z / alpha`` with fresh ``z ~ N(0, I)``; the two
  noises are independent, so ``E ||D(y_hat) - y_bar||^2 = E ||D(y_hat) - x||^2 +
  const``: an unbiased stand-in for the supervised loss at noise ``s sqrt(1 + alpha^2)``, which
  the timestep-conditioned prior shares its parameters with.  Never the clean image.

:class:`Adaptation` is the hook :func:`~dipprior.diffusion.sampling.reverse_diffusion` calls
before each step's model evaluation; :class:`AdaptConfig` holds its settings
(``SamplerConfig(adapt=AdaptConfig())``, ``dipprior restore --adapt N``).
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from dipprior._seeds import ADAPT_PROBE, stream_seed
from dipprior._tensor import to_model_scale
from dipprior.diffusion.sampling import model_output
from dipprior.pipeline.consistency import observation_to_model_scale

__all__ = ["AdaptConfig", "Adaptation", "LOSSES", "LoRA", "PROBE_DRAWS", "check_rank",
           "measurement_loss", "r2r_loss", "r2r_pair", "with_lora"]

LOSSES = ("auto", "measurement", "r2r")
#: recorruptions of the observation on which :meth:`Adaptation.estimated_gain` scores the
#: adapted step against the prior's (the same draws for both)
PROBE_DRAWS = 4


@dataclass(frozen=True)
class AdaptConfig:
    """How the prior is adapted to each observation during its reverse chain.

    Attributes:
        iterations: optimiser steps at each adapted reverse step (0: the adapted model is built
            and used but never changed, which is the plain chain exactly).
        every: adapt at every ``every``-th reverse step, the first included (SCD's ``skip``).
        lr: Adam learning rate of the LoRA factors.
        rank: LoRA rank, at most the smallest adapted layer's ``min(outputs, inputs)``
            (checked against the model when the sampler is built, :func:`check_rank`).
        loss: ``"measurement"`` (``||A D(x_t) - y||^2``), ``"r2r"`` (recorrupted-to-recorrupted,
            Gaussian denoising only) or ``"auto"`` (``"r2r"`` for Gaussian denoising, else
            ``"measurement"``).
        alpha: R2R's recorruption strength: the adapted denoiser sees noise
            ``s sqrt(1 + alpha^2)``.
        batch: recorruptions per R2R iteration, or chains (the first ``batch`` of the image's
            ``samples``) whose state the measurement loss uses.
        probe: R2R only: after this many iterations, estimate the adaptation's gain (the MSE it
            removes, in percent of the noise variance it denoises) on :data:`PROBE_DRAWS`
            recorruptions of the observation drawn apart from the training ones
            (:meth:`Adaptation.estimated_gain`; 0: no estimate).
        min_gain: with ``probe``, the per-image rule: an estimated gain below ``min_gain``
            stops the adaptation there and puts the prior back exactly as trained (None:
            estimate only, always adapt).

    >>> AdaptConfig(iterations=0).iterations
    0
    """

    iterations: int = 20
    every: int = 1
    lr: float = 1e-3
    rank: int = 4
    loss: str = "auto"
    alpha: float = 0.5
    batch: int = 1
    probe: int = 0
    min_gain: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("iterations", 0), ("every", 1), ("rank", 1), ("batch", 1),
                          ("probe", 0)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        for name in ("lr", "alpha"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.probe and self.loss == "measurement":
            raise ValueError("probe: the gain estimate needs the R2R loss (Gaussian denoising); "
                             "set probe=0 for the measurement loss")
        if self.probe > self.iterations:
            raise ValueError(f"probe: expected at most iterations ({self.iterations}), got "
                             f"{self.probe}")
        if self.min_gain is not None:
            if not (isinstance(self.min_gain, numbers.Real) and not isinstance(self.min_gain, bool)
                    and math.isfinite(self.min_gain)):
                raise ValueError(f"min_gain: expected None or a finite number (percent), got "
                                 f"{self.min_gain!r}")
            if self.probe == 0:
                raise ValueError("min_gain: the rule needs a probe (probe >= 1 iterations)")


class LoRA(nn.Module):
    """A parametrization ``W -> W + B A`` of a weight ``W`` (out, ...) with rank-``rank``
    factors: ``A`` (rank, fan_in) drawn with std ``1 / sqrt(fan_in)``, ``B`` (out, rank) zero."""

    def __init__(self, weight: torch.Tensor, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        fan_in = weight[0].numel()
        a = torch.randn((rank, fan_in), generator=generator) / math.sqrt(fan_in)
        # the factors stay float32 (Adam on float16 factors underflows), added in W's dtype
        self.A = nn.Parameter(a.to(weight.device))
        self.B = nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.B @ self.A).view_as(weight).to(weight.dtype)


def _adapted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers :func:`with_lora` adapts: every ``Conv1d``, ``Conv2d`` and ``Linear`` but the
    first and the last convolution in module order, with their names."""
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    convs = [m for _, m in layers if not isinstance(m, nn.Linear)]
    image_layers = {id(convs[0]), id(convs[-1])} if convs else set()
    return [(name, m) for name, m in layers if id(m) not in image_layers]


def check_rank(model: object, rank: int) -> None:
    """Refuse, before anything is copied or allocated, a LoRA ``rank`` larger than the smallest
    adapted layer's ``min(outputs, inputs)`` (beyond it ``B A`` gains nothing but memory), or
    a ``model`` that is not an ``nn.Module`` or has no layer to adapt."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt: needs an nn.Module prior to adapt, got {type(model).__name__}")
    layers = _adapted_layers(model)
    if not layers:
        raise ValueError("adapt: the model has no Conv1d, Conv2d or Linear layer to adapt "
                         "besides its first and last convolution")
    sizes = {name: min(m.weight.shape[0], m.weight[0].numel()) for name, m in layers}
    smallest = min(sizes, key=sizes.__getitem__)
    if rank > sizes[smallest]:
        raise ValueError(f"rank: {rank} is larger than the smallest adapted layer of the model "
                         f"({smallest!r}: min(outputs, inputs) = {sizes[smallest]}); a LoRA rank "
                         f"above it adds only memory: use rank <= {sizes[smallest]}")


def with_lora(model: nn.Module, rank: int, generator: torch.Generator
              ) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of ``model`` (frozen, eval mode) with :class:`LoRA` on every ``Conv1d``,
    ``Conv2d`` and ``Linear`` but the first and the last convolution in module order (the ones
    reading and writing the image stay as trained, as in DDIP) -> ``(copy, the LoRA
    parameters)``.  Built outside inference mode, whatever the caller's; ``rank`` is checked
    first (:func:`check_rank`)."""
    check_rank(model, rank)
    with torch.inference_mode(False):
        adapted = copy.deepcopy(model).eval().requires_grad_(False)
        params: list[nn.Parameter] = []
        for _, module in _adapted_layers(adapted):
            parametrize.register_parametrization(module, "weight",
                                                 LoRA(module.weight, rank, generator))
            lora = module.parametrizations.weight[0]
            params += [lora.A, lora.B]
    for p in params:
        p.requires_grad_(True)
    return adapted, params


def r2r_pair(y: torch.Tensor, sigma: float, alpha: float, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y + alpha s z, y - s z / alpha)`` with ``z ~ N(0, I)`` from ``generator``: for
    ``y = x + s n`` the two have independent noises of std ``s sqrt(1 + alpha^2)`` and
    ``s sqrt(1 + 1 / alpha^2)``."""
    z = torch.randn(y.shape, generator=generator).to(y.device, y.dtype)
    return y + alpha * sigma * z, y - (sigma / alpha) * z


def r2r_loss(denoise: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, sigma: float,
             alpha: float, generator: torch.Generator) -> torch.Tensor:
    """The recorrupted-to-recorrupted loss ``mean (denoise(y_hat) - y_bar)^2`` (one draw of
    :func:`r2r_pair`).  Over the draws of the noise and of ``z`` it equals the supervised
    ``mean (denoise(y_hat) - x)^2`` plus ``s^2 (1 + 1 / alpha^2)``."""
    y_hat, y_bar = r2r_pair(y, sigma, alpha, generator)
    return (denoise(y_hat) - y_bar).square().mean()


def measurement_loss(x0: torch.Tensor, y_model: torch.Tensor, operator: object) -> torch.Tensor:
    """``mean (A x0 - y)^2`` on the model scale: ``x0`` (N, C, H, W) in [-1, 1] and ``y_model``
    from :func:`~dipprior.pipeline.consistency.observation_to_model_scale` (a linear ``A`` maps
    the model scale's image to the model scale's observation)."""
    return (operator.forward(x0) - y_model).square().mean()


class Adaptation:
    """The adapted copy of a prior for one image, and the hook that adapts it.

    ``Adaptation(model, scheduler, config, y, operator, loss, generator)``; ``.model`` is the
    adapted copy to sample with, and ``hook(x, t, i)`` (called before the model evaluation of
    reverse step ``i`` at timestep ``t`` with the state ``x``) runs ``config.iterations`` Adam
    steps on every ``config.every``-th step.  ``loss`` is ``"measurement"`` or ``"r2r"``.
    """

    def __init__(self, model: nn.Module, scheduler: object, config: AdaptConfig,
                 y: torch.Tensor, operator: object, loss: str,
                 generator: torch.Generator) -> None:
        self.scheduler, self.config, self.operator, self.loss = scheduler, config, operator, loss
        self.generator = generator
        self.model, self.params = with_lora(model, config.rank, generator)
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        with torch.inference_mode(False):
            self.y = y.detach().clone()  # image scale, on the model's device
        self.sigma = float(getattr(operator, "noise_sigma", 0.0))
        if loss == "r2r":
            if not operator.is_denoising:
                raise ValueError(f"adapt: loss 'r2r' is for Gaussian denoising (A = I with "
                                 f"noise_sigma > 0), got {type(operator).__name__} with "
                                 f"noise_sigma {self.sigma}")
            level = 2.0 * self.sigma * math.sqrt(1.0 + config.alpha ** 2)
            self.r2r_t = int(scheduler.timestep_for_noise_level(level))
            self.r2r_scale = float(scheduler.alphas_cumprod[self.r2r_t]) ** 0.5
        else:
            if config.probe:
                raise ValueError("probe: the gain estimate needs the R2R loss (Gaussian "
                                 "denoising); set probe=0 for the measurement loss")
            with torch.inference_mode(False):
                self.y_model = observation_to_model_scale(self.y, operator).unsqueeze(0)
        # the probe's recorruptions: a stream of their own (the training draws stay as they are)
        self.probe_seed = stream_seed(generator.initial_seed(), ADAPT_PROBE)
        self.iterations_run, self.seconds, self.stopped = 0, 0.0, False
        self.gain: float | None = None  # percent of the noise variance, set at the probe

    def _x0(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The adapted model's Tweedie ``x0`` of ``x_t`` at ``t`` (differentiable, unclamped)."""
        return self.scheduler.pred_x0(model_output(self.model, x_t, t), t, x_t)

    def _denoise(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The adapted one-step denoiser at the recorrupted noise level, image scale."""
        x0 = self._x0(self.r2r_scale * to_model_scale(y_hat), self.r2r_t)
        return (x0 + 1.0) / 2.0

    def _loss(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.loss == "r2r":
            ys = self.y.unsqueeze(0).expand(self.config.batch, *self.y.shape)
            return r2r_loss(self._denoise, ys, self.sigma, self.config.alpha, self.generator)
        return measurement_loss(self._x0(x[:self.config.batch], t), self.y_model, self.operator)

    def _probe_loss(self) -> float:
        """The R2R loss on the probe's fixed recorruptions, without gradients."""
        ys = self.y.unsqueeze(0).expand(PROBE_DRAWS, *self.y.shape)
        with torch.no_grad():
            return float(r2r_loss(self._denoise, ys, self.sigma, self.config.alpha,
                                  torch.Generator().manual_seed(self.probe_seed)))

    def estimated_gain(self, before: float, after: float) -> float:
        """The MSE the adapted denoiser removes over the prior's, in percent of the variance of
        the noise it denoises (``s^2 (1 + alpha^2)``), from their probe losses on the same
        draws: each R2R loss is its supervised MSE plus the same constant in expectation
        (:func:`r2r_loss`), so ``100 (before - after) / (s^2 (1 + alpha^2))``.  The difference
        of paired losses is precise where each MSE alone is not (the constant's draws dominate
        it).  The draws are apart from the training ones but the photo is the one adapted to,
        so the estimate leans optimistic."""
        return 100.0 * (before - after) / (self.sigma ** 2 * (1.0 + self.config.alpha ** 2))

    def _revert(self) -> None:
        """The prior exactly as trained: every LoRA's ``B`` back to zero."""
        with torch.no_grad():
            for p in self.params[1::2]:
                p.zero_()

    def hook(self, x: torch.Tensor, t: int, i: int) -> None:
        """Adapt before reverse step ``i`` (timestep ``t``, state ``x``) when it is due."""
        if self.config.iterations == 0 or i % self.config.every or self.stopped:
            return
        began = time.perf_counter()
        probe = self.config.probe
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone()  # an inference tensor cannot enter autograd
            before = self._probe_loss() if probe and self.iterations_run == 0 else None
            for _ in range(self.config.iterations):
                self.optimizer.zero_grad(set_to_none=True)
                self._loss(x, t).backward()
                self.optimizer.step()
                self.iterations_run += 1
                if before is not None and self.iterations_run == probe:
                    self.gain = self.estimated_gain(before, self._probe_loss())
                    floor = self.config.min_gain
                    if floor is not None and self.gain < floor:
                        self._revert()
                        self.stopped = True
                        break
        if x.is_cuda:  # the backward passes run asynchronously
            torch.cuda.synchronize(x.device)
        self.seconds += time.perf_counter() - began
