"""Export a training checkpoint as a shipped prior: weights, config, model card, loss curve.

:func:`export_pretrained` turns a checkpoint directory written by ``dipprior train`` into
``dipprior/weights/<name>/``: float16 EMA weights (``model.safetensors``), the JSON config
(``config.json``, readable by :func:`dipprior.diffusion.load`), a ``MODEL_CARD.md`` and, when
matplotlib is installed, ``loss_curve.png``.  The folder is assembled next to its final place and
swapped in, so readers never see a half-written prior.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dipprior._atomic import atomic_folder, atomic_write_bytes, atomic_write_json
from dipprior.diffusion import checkpoint as ckpt
from dipprior.diffusion.checkpoint import weights_root

__all__ = ["CARD_FILE", "LOSS_PLOT_FILE", "MAX_BYTES", "export_pretrained", "model_card",
           "parameter_count", "plot_loss_curve", "read_loss_history", "read_training_state"]

CARD_FILE = "MODEL_CARD.md"
LOSS_PLOT_FILE = "loss_curve.png"
MAX_BYTES = 30 * 2**20  # the shipped folder's size limit


# ----------------------------------------------------------------------------- training records


def read_training_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON state in a checkpoint's ``training_state.safetensors`` header (no tensors read).

    Holds ``step``, ``world_size``, ``seed`` and the training ``args``; ``{}`` when the directory
    has no training state (a bare ``save``).
    """
    path = Path(directory) / ckpt.STATE_FILE
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if not 0 < header_len < 2**27:
            raise ValueError(f"{path} is truncated or corrupt (header length {header_len})")
        try:
            header = json.loads(f.read(header_len))
            state = json.loads(header.get("__metadata__", {}).get("state", "{}"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is truncated or corrupt ({exc})") from None
    state.pop("optimizer", None)
    return state


def read_loss_history(directory: str | os.PathLike) -> list[tuple[int, float]]:
    """``(step, loss)`` pairs from a checkpoint's ``loss_history.csv`` (empty when absent)."""
    path = Path(directory) / ckpt.LOSS_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            try:
                rows.append((int(record["step"]), float(record["loss"])))
            except (KeyError, TypeError, ValueError):
                continue  # a line being written while we read
    return rows


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_loss_curve(history: Sequence[tuple[int, float]], path: str | os.PathLike,
                    title: str = "training loss") -> Path | None:
    """A small PNG of the loss (raw and moving average, log scale); None without matplotlib."""
    from dipprior._mpl import figure

    if not history:
        raise ValueError("history: empty")
    fig = figure(figsize=(5, 3), dpi=80)
    if fig is None:
        return None
    steps = [s for s, _ in history]
    losses = [v for _, v in history]
    window = max(1, len(losses) // 50)
    ax = fig.subplots()
    ax.plot(steps, losses, color="0.75", linewidth=0.5, label="per step")
    ax.plot(steps, _smooth(losses, window), color="C0", linewidth=1.2,
            label=f"moving average ({window} steps)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("noise-prediction MSE")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


# ----------------------------------------------------------------------------- model card


def _loss_table(history: Sequence[tuple[int, float]], points: int = 8) -> str:
    if not history:
        return "(no loss history in the checkpoint)\n"
    losses = [v for _, v in history]
    window = max(1, len(losses) // 20)
    smooth = _smooth(losses, window)
    idx = sorted({round(i * (len(history) - 1) / (points - 1)) for i in range(points)})
    lines = [f"| step | loss (mean of the last {window} steps) |", "|---:|---:|"]
    lines += [f"| {history[i][0]} | {smooth[i]:.4f} |" for i in idx]
    return "\n".join(lines) + "\n"


def _curve_table(curve: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| step | PSNR (dB) | SSIM |", "|---:|---:|---:|"]
    for row in sorted(curve, key=lambda r: int(r["step"])):
        ssim = row.get("ssim")
        lines.append(f"| {int(row['step'])} | {float(row['psnr']):.2f} | "
                     f"{'' if ssim in (None, '') else f'{float(ssim):.4f}'} |")
    return "\n".join(lines) + "\n"


def model_card(name: str, config: Mapping[str, Any], *, parameters: int,
               training: Mapping[str, Any], history: Sequence[tuple[int, float]],
               evaluation: Mapping[str, Mapping[str, Any]] | None = None,
               curve: Sequence[Mapping[str, Any]] | None = None,
               loss_plot: bool = False) -> str:
    """The ``MODEL_CARD.md`` text of a shipped prior."""
    step = training.get("step")
    args = training.get("args", {})
    m, s = config["model"], config["scheduler"]
    lines = [
        f"# Model card: `{name}`",
        "",
        "An unconditional DDPM prior for natural colour images: the `dipprior.diffusion.UNet` "
        "below, trained with `dipprior train` and shipped for `dipprior demo`, "
        "`DIPInitializedSampler` and the examples. Load it with",
        "",
        "```python",
        "from dipprior.diffusion import load_pretrained",
        f"model, scheduler = load_pretrained({name!r})  # (UNet, Scheduler), eval mode",
        "```",
        "",
        "## Model",
        "",
        f"- `UNet`: base channels {m['base_channels']}, channel multipliers "
        f"{m['channel_mults']}, {m['num_res_blocks']} residual blocks per level, attention at "
        f"{m['attention_resolutions'] or 'no level'}, dropout {m['dropout']}; "
        f"{parameters / 1e6:.2f} M parameters. Fully convolutional: any image size (padded to "
        f"a multiple of {2 ** (len(m['channel_mults']) - 1)} internally).",
        f"- Schedule: {s['num_train_timesteps']} timesteps, `{s['beta_schedule']}` betas "
        f"{s['beta_start']}..{s['beta_end']}, predicts `{s['prediction_type']}`.",
        "- Weights: the exponential moving average (EMA) of the training weights, stored as "
        "float16 safetensors (loaded into float32).",
        "",
        "## Training",
        "",
        f"- Data: {training.get('data', 'unknown')}. Never the test sets (CBSD68, Kodak24, "
        "Urban100).",
        f"- Patches: random {training.get('patch_size', '?')}x{training.get('patch_size', '?')} "
        f"crops with random flips; augmentation: {_augmentation_text(args.get('augment'))}.",
        f"- Timesteps: {_timesteps_text(args.get('timesteps'), s['num_train_timesteps'])}.",
        f"- Samples seen: {_samples_seen(step, args, training)}.",
        f"- Steps: {step if step is not None else '?'}, batch size "
        f"{args.get('batch_size', '?')} x {training.get('world_size', 1)} process(es); Adam, "
        f"lr {args.get('lr', '?')} after {args.get('warmup', '?')} linear warm-up steps "
        f"({args.get('lr_schedule', 'constant')} afterwards), "
        f"gradient clipping {args.get('grad_clip', '?')}, EMA decay "
        f"{args.get('ema_decay', '?')}, AMP {args.get('amp', '?')}, seed "
        f"{training.get('seed', '?')}.",
        f"- Compute: {training.get('compute', 'not recorded')}.",
        f"- Command: `{training['command']}`" if training.get("command") else "",
        "",
        "### Training loss",
        "",
    ]
    if loss_plot:
        lines += [f"![training loss]({LOSS_PLOT_FILE})", ""]
    lines += [_loss_table(history)]
    lines += ["## Evaluation: one-step denoising", "",
              "The prior as a Gaussian denoiser: one model evaluation at the timestep whose noise "
              "level matches the image noise (`y = x + s n` -> `x_t = sqrt(abar_t) (2y - 1)` with "
              "`noise_level(t) = 2s`, x0 prediction clamped; see `dipprior.pretrained`). "
              "Noise is Gaussian, not clipped, drawn with `torch.Generator().manual_seed(seed + "
              "i)` for the i-th image in file-name order. Crops are center crops.", ""]
    if evaluation:
        lines += ["CBM3D (the `bm3d` package, colour BM3D with the true sigma) denoises the "
                  "same noisy crops in the same run.", "",
                  "| data | images | crop | sigma | seed | t | PSNR (dB) | SSIM | noisy PSNR "
                  "| CBM3D PSNR | prior - CBM3D |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for data, e in evaluation.items():
            ref = e.get("cbm3d_psnr")
            ref_cells = (f"{ref:.2f} | {e['psnr'] - ref:+.2f}" if ref is not None
                         else "not measured | ")
            lines.append(
                f"| {data} | {e['images']} | {e['crop']} | {e['sigma_255']:g}/255 | {e['seed']} "
                f"| {e['t']} | {e['psnr']:.2f} | {e['ssim']:.4f} | {e['noisy_psnr']:.2f} "
                f"| {ref_cells} |")
        lines += _adapted_lines(evaluation)
        lines += ["", "For scale: DnCNN reports 31.21 dB on full CBSD68 images and 32.11 dB on "
                  "Kodak24 at sigma=25 (a dedicated denoiser on whole images, so not directly "
                  "comparable with these crops).", ""]
    else:
        lines += ["(not evaluated at export)", ""]
    if curve:
        lines += ["### Denoising PSNR against training steps", "",
                  "Each row evaluates the checkpoint saved at that step with the same protocol "
                  "(CBSD68 crops as above).", "", _curve_table(curve)]
    lines += ["## Limitations", "",
              "A small model trained on a CPU budget (the data above), for the demo, "
              "the examples "
              "and the tests; far from a state-of-the-art generative prior. It was trained on "
              "64x64 patches, so it knows local texture and edges, not the layout of whole "
              "scenes. See `docs/results.md` for how it does inside `DIPInitializedSampler`.",
              ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _adapted_lines(evaluation: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The model card's table of the adapted one step (rows with an ``adapted`` entry)."""
    adapted = {data: e["adapted"] for data, e in evaluation.items() if e.get("adapted")}
    if not adapted:
        return []
    lines = ["", "On the first crops of each row: the sampler's default for denoising (the one "
             "step above with its data term, `lam` 320), and the same after adapting the prior "
             "to each noisy crop (`SamplerConfig(adapt=AdaptConfig(...))`: LoRA factors trained "
             "with the recorrupted-to-recorrupted loss on the noisy crop alone; "
             "`dipprior.pipeline.adapt`), with the one step and CBM3D on the same crops.", "",
             "| data | crops | one step | default | adapted | CBM3D | adapted - CBM3D "
             "| adapted - default | seconds per crop |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for data, a in adapted.items():
        ref = a.get("cbm3d_psnr")
        ref_cells = " | " if ref is None else f"{ref:.2f} | {a['psnr'] - ref:+.2f}"
        lines.append(f"| {data} | {a['images']} | {a['onestep_psnr']:.2f} "
                     f"| {a['default_psnr']:.2f} | {a['psnr']:.2f} | {ref_cells} "
                     f"| {a['psnr'] - a['default_psnr']:+.2f} | {a['seconds']:.1f} |")
    return lines


def _augmentation_text(augment: Mapping[str, Any] | None) -> str:
    if not augment:
        return "none"
    parts = []
    if augment.get("rotate"):
        parts.append("random 90-degree rotations")
    low, high = augment.get("scale", (1.0, 1.0))
    if (low, high) != (1.0, 1.0):
        parts.append(f"rescaling of the source photo by {low:g}..{high:g} (log-uniform)")
    if augment.get("saturation"):
        parts.append(f"saturation x(1 +- {augment['saturation']:g})")
    if augment.get("brightness"):
        parts.append(f"brightness x(1 +- {augment['brightness']:g})")
    return ", ".join(parts) or "none"


def _timesteps_text(timesteps: Mapping[str, Any] | None, T: int) -> str:
    if not timesteps or not timesteps.get("low_fraction"):
        return f"uniform over 0..{T - 1}"
    f, m = timesteps["low_fraction"], timesteps["low_max"]
    return (f"a mixture: {f:.0%} uniform over 0..{m - 1}, {1 - f:.0%} uniform over 0..{T - 1} "
            f"({f + (1 - f) * m / T:.0%} of the samples at t < {m})")


def _samples_seen(step: Any, args: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    if step is None or "batch_size" not in args:
        return "not recorded"
    total = int(step) * int(args["batch_size"]) * int(training.get("world_size", 1))
    note = training.get("history_note")
    return f"{total:,} patches ({step} steps)" + (f"; {note}" if note else "")


# ----------------------------------------------------------------------------- export


def _half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def export_pretrained(
    checkpoint: str | os.PathLike,
    name: str = ckpt.DEFAULT_PRETRAINED,
    *,
    root: str | os.PathLike | None = None,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Mapping[str, Any]] | None = None,
    curve: Sequence[Mapping[str, Any]] | None = None,
    plot: bool = True,
) -> Path:
    """Export the EMA weights of ``checkpoint`` as the shipped prior ``<root>/<name>/``.

    Args:
        checkpoint: a directory written by ``dipprior train`` (or :func:`~dipprior.diffusion.
            save`); it may still be training (its files are replaced atomically).
        name: folder name, the name :func:`~dipprior.diffusion.load_pretrained` takes.
        root: the registry folder (default: the package's ``weights`` folder).
        training: what the checkpoint does not record, for the model card: ``data``,
            ``patch_size``, ``compute``, ``command``. The step and the optimiser settings are
            read from the checkpoint.
        evaluation: data set -> ``{images, crop, sigma_255, seed, t, psnr, ssim, noisy_psnr}``
            from :func:`evaluate_denoiser`, stored in ``config.json`` and the card.
        curve: rows ``{step, psnr, ssim}`` of the denoising PSNR against training steps.
        plot: write ``loss_curve.png`` (needs matplotlib; skipped silently without it).

    Writes ``model.safetensors`` (float16), ``config.json``, ``MODEL_CARD.md`` and maybe
    ``loss_curve.png`` into a temporary folder beside the target and swaps it in; more than
    :data:`MAX_BYTES` raises ``ValueError`` and leaves any earlier export in place.
    Returns the folder.
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name: expected a plain folder name, got {name!r}")
    checkpoint = Path(checkpoint)
    model, scheduler = ckpt.load(checkpoint, device="cpu")
    config = ckpt.read_json(checkpoint / ckpt.CONFIG_FILE)
    state = read_training_state(checkpoint)
    history = read_loss_history(checkpoint)
    info = {"seed": state.get("seed"), "world_size": state.get("world_size", 1),
            "args": state.get("args", {}), "step": state.get("step", config.get("step")),
            **dict(training or {})}
    if history and info["step"] is not None:
        history = [(s, v) for s, v in history if s <= int(info["step"])]
    root = weights_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    with atomic_folder(target, keep_others=False) as tmp:
        ckpt.save_tensors(tmp / ckpt.WEIGHTS_FILE, _half_state(model),
                          {"format": "pt", "dtype": "float16"})
        config = ckpt.checkpoint_config(model, scheduler, {
            "step": info["step"],
            "pretrained": {"name": name, "weights_dtype": "float16", "training": info,
                           "evaluation": dict(evaluation or {}),
                           "curve": [dict(r) for r in curve or []]}})
        atomic_write_json(tmp / ckpt.CONFIG_FILE, config)
        has_plot = bool(plot and history and plot_loss_curve(
            history, tmp / LOSS_PLOT_FILE, title=f"{name}: training loss"))
        card = model_card(name, config, parameters=parameter_count(model),
                          training=info, history=history, evaluation=evaluation, curve=curve,
                          loss_plot=has_plot)
        atomic_write_bytes(tmp / CARD_FILE, card.encode())
        size = sum(p.stat().st_size for p in tmp.iterdir())
        if size > MAX_BYTES:
            raise ValueError(f"export of {checkpoint} is {size / 2**20:.1f} MiB, over the "
                             f"{MAX_BYTES / 2**20:.0f} MiB limit for shipped weights")
    return target


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
