"""The shipped diffusion prior measured as a one-step denoiser (its export into the package is a
maintainer's tool, ``dipprior._prior_export``).

* :func:`one_step_denoise` uses the prior as a one-step Gaussian denoiser and
  :func:`evaluate_denoiser` scores it on held-out images -- the number the model card reports.

The one-step denoiser.  A noisy image ``y = x + s n`` (``x`` in [0, 1], ``n`` standard normal) is,
on the model's [-1, 1] scale, ``2y - 1 = (2x - 1) + 2s n``.  The forward process is
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps = sqrt(abar_t) (x0 + sigma_t eps)`` with
``sigma_t = sqrt((1 - abar_t) / abar_t)`` (:meth:`~dipprior.diffusion.Scheduler.noise_level`).
So with ``x0 = 2x - 1`` and the timestep ``t*`` whose ``sigma_t`` is closest to ``2s``
(:meth:`~dipprior.diffusion.Scheduler.timestep_for_noise_level`), ``x_t* = sqrt(abar_t*) (2y - 1)``
is distributed as the forward process at ``t*`` (exactly when ``sigma_t* = 2s``; the grid of 1000
timesteps leaves a relative mismatch well under 1 % around sigma=25).  One model evaluation gives
``x0_hat = pred_x0(model(x_t*, t*), t*, x_t*)``, clamped to [-1, 1]; the estimate is
``(x0_hat + 1) / 2``.  For an epsilon model this is ``(2y - 1) - sigma_t* eps_hat``: the network
predicts the noise and it is subtracted, i.e. a learned MMSE denoiser (Tweedie).
"""


from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dipprior._tensor import eval_mode, to_image_scale, to_model_scale
from dipprior.diffusion import checkpoint as ckpt
from dipprior.diffusion.sampling import model_output
from dipprior.diffusion.scheduler import Scheduler
from dipprior.metrics import ResultsTable, evaluate, results_table

__all__ = ["DEFAULT_NAME", "denoise_timestep", "evaluate_denoiser", "fp16_roundtrip",
           "one_step_denoise"]

DEFAULT_NAME = ckpt.DEFAULT_PRETRAINED



# ----------------------------------------------------------------------------- denoising


def denoise_timestep(scheduler: Scheduler, sigma: float) -> int:
    """The timestep whose noise level matches an image-space noise std ``sigma`` (on [0, 1]).

    >>> denoise_timestep(Scheduler(), 25 / 255)
    56
    """
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma: expected a noise std > 0 on the [0, 1] scale, got {sigma!r}")
    return int(scheduler.timestep_for_noise_level(2.0 * float(sigma)))


@torch.inference_mode()
def one_step_denoise(model: Any, scheduler: Scheduler, noisy: torch.Tensor, sigma: float,
                     *, t: int | None = None) -> torch.Tensor:
    """Denoise ``noisy = x + sigma n`` with one model evaluation (see the module docstring).

    ``noisy`` is (3, H, W) or (N, 3, H, W) on the [0, 1] scale (noise not clipped); any H, W the
    model accepts.  ``t`` overrides the matched timestep.  Returns the estimate in [0, 1], same
    shape, on ``noisy``'s device.
    """
    if not isinstance(noisy, torch.Tensor) or not noisy.is_floating_point():
        raise TypeError("noisy: expected a float tensor")
    if noisy.dim() not in (3, 4) or noisy.shape[-3] != 3:
        raise ValueError(f"noisy: expected shape (3, H, W) or (N, 3, H, W), got "
                         f"{tuple(noisy.shape)}")
    t = denoise_timestep(scheduler, sigma) if t is None else int(t)
    abar = float(scheduler.alphas_cumprod[t])
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    dev = param.device if param is not None else noisy.device
    y = (noisy.unsqueeze(0) if noisy.dim() == 3 else noisy).to(dev, torch.float32)
    x_t = abar ** 0.5 * to_model_scale(y)
    with eval_mode(model):
        out = model_output(model, x_t, t)
    x0 = scheduler.pred_x0(out, t, x_t).clamp(-1.0, 1.0)
    image = to_image_scale(x0).to(noisy.device)
    return image[0] if noisy.dim() == 3 else image


def evaluate_denoiser(
    model: Any,
    scheduler: Scheduler,
    images: Mapping[str, torch.Tensor],
    *,
    sigma: float = 25 / 255,
    seed: int = 0,
    batch_size: int = 8,
    cbm3d: bool | None = None,
    cbm3d_cache: str | os.PathLike | None = None,
    adapt: Any = None,
    adapt_images: int | None = None,
    progress: bool = True,
) -> ResultsTable:
    """Score :func:`one_step_denoise` on clean ``images`` (name -> (3, H, W) in [0, 1]).

    Image ``i`` (in the mapping's order) gets the noise ``Denoise(sigma).degrade(x,
    torch.Generator().manual_seed(seed + i))`` -- the same draw as
    :func:`dipprior.experiments.compare` uses, so the numbers are comparable.  Images of one size
    are run ``batch_size`` at a time.  Returns the per-image table with its average row
    (columns Image, PSNR, SSIM, MSE, MAE, Delta E, Noisy PSNR, t), plus "CBM3D PSNR" and
    "CBM3D SSIM" on the same noisy images when ``cbm3d`` (default: when the optional ``bm3d``
    package is installed) -- the reference a user would pick instead.  ``cbm3d_cache`` keeps
    CBM3D's outputs in a folder keyed by the noisy image's bytes and sigma (CBM3D is
    deterministic, so a hit is exactly what a new run returns; it takes seconds per crop).
    ``adapt`` (an :class:`~dipprior.pipeline.adapt.AdaptConfig`) adds, on the first
    ``adapt_images`` images (None: all; the others' cells stay empty), the sampler's default
    for denoising (its one step with the data term, ``recommended_config``) without ("Default
    PSNR") and with the prior adapted to each noisy image first ("Adapted PSNR", "Adapted
    SSIM", "Adapted s"; the loss ``adapt.loss`` chooses, recorrupted-to-recorrupted for
    ``"auto"``), seeded with ``seed + i``.
    """
    from tqdm.auto import tqdm

    from dipprior.metrics import psnr
    from dipprior.operators import Denoise

    if not images:
        raise ValueError("images: empty")
    if adapt_images is not None and (isinstance(adapt_images, bool)
                                     or not isinstance(adapt_images, int) or adapt_images < 0):
        raise ValueError(f"adapt_images: expected None or an int >= 0, got {adapt_images!r}")
    op = Denoise(sigma)
    t = denoise_timestep(scheduler, sigma)
    if cbm3d is None:
        cbm3d = importlib.util.find_spec("bm3d") is not None
    if cbm3d:
        from dipprior.denoisers import cbm3d as cbm3d_denoise
    names = list(images)
    order = {name: i for i, name in enumerate(names)}
    noisy = {name: op.degrade(images[name], torch.Generator().manual_seed(seed + i))
             for i, name in enumerate(names)}
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[int, ...], list[str]] = {}
    for name in names:
        groups.setdefault(tuple(images[name].shape), []).append(name)
    bar = tqdm(total=len(names), desc="denoise", disable=not progress, leave=False)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            out = one_step_denoise(model, scheduler, torch.stack([noisy[n] for n in chunk]),
                                   sigma, t=t)
            for name, restored in zip(chunk, out, strict=True):
                rows[name] = {"Image": name, **evaluate(restored, images[name]),
                              "Noisy PSNR": float(psnr(noisy[name], images[name])), "t": t}
                if cbm3d:
                    reference = evaluate(_cached(cbm3d_denoise, noisy[name], sigma, cbm3d_cache),
                                         images[name])
                    rows[name].update({"CBM3D PSNR": reference["psnr"],
                                       "CBM3D SSIM": reference["ssim"]})
                i = order[name]
                if adapt is not None and (adapt_images is None or i < adapt_images):
                    rows[name].update(_adapted(model, scheduler, noisy[name], images[name], op,
                                               adapt, seed + i))
            bar.update(len(chunk))
    bar.close()
    formats = {"Noisy PSNR": ".2f", "t": "d", "CBM3D PSNR": ".2f", "CBM3D SSIM": ".4f",
               "Default PSNR": ".2f", "Adapted PSNR": ".2f", "Adapted SSIM": ".4f",
               "Adapted s": ".1f"}
    return results_table([rows[n] for n in names], formats=formats)


def _adapted(model: Any, scheduler: Scheduler, noisy: torch.Tensor, clean: torch.Tensor,
             op: Any, adapt: Any, seed: int) -> dict[str, float]:
    """The sampler's default step for ``noisy`` (its one step with the data term) without and
    with the prior adapted to it first -> their PSNR, the adapted SSIM and seconds."""
    from dipprior.pipeline import DIPInitializedSampler
    from dipprior.pipeline.presets import recommended_config

    config = recommended_config(op)
    default = DIPInitializedSampler(model, scheduler, config, progress=False)(noisy, op, seed=seed)
    result = DIPInitializedSampler(model, scheduler, config.replace(adapt=adapt),
                                   progress=False)(noisy, op, seed=seed)
    scores = evaluate(result.image, clean)
    return {"Default PSNR": evaluate(default.image, clean)["psnr"],
            "Adapted PSNR": scores["psnr"], "Adapted SSIM": scores["ssim"],
            "Adapted s": result.seconds["total"]}


def fp16_roundtrip(model: torch.nn.Module) -> torch.nn.Module:
    """Round the model's floating-point weights through float16 in place (what shipping does)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().to(tensor.dtype))
    return model


def _cached(denoise: Any, noisy: torch.Tensor, sigma: float,
            folder: str | os.PathLike | None) -> torch.Tensor:
    """``denoise(noisy, sigma)``, kept in ``folder`` (safetensors) when given."""
    if folder is None:
        return denoise(noisy, sigma)
    import hashlib

    digest = hashlib.sha256(noisy.detach().cpu().float().contiguous().numpy().tobytes())
    digest.update(repr((tuple(noisy.shape), float(sigma))).encode())
    path = Path(folder) / f"{digest.hexdigest()[:32]}.safetensors"
    if path.is_file():
        return ckpt.read_tensors(path)[0]["image"]
    out = denoise(noisy, sigma)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors(path, {"image": out})
    return out
