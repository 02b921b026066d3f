"""Restore with a published guided-diffusion (ADM) prior: the classical peer, DiffPIR from noise,
DIP alone, the default (classical start) and the DIP start, with PSNR, NFE and seconds.

Give it the checkpoint you downloaded (see docs/diffusion.md, "Use a published prior") and,
on a GPU, 256x256 images of the prior's domain (faces for ``ffhq_10m.pt``):

    python examples/adm_prior.py --model ffhq_10m.pt --image face.png --task inpaint --device cuda

Without a file, ``--random-weights PRESET`` builds the architecture with random weights: the
PSNRs are then meaningless, but it checks that every method runs at 256x256 and shows what one
costs (``--max-steps``/``--dip-iterations`` shorten the run):

    python examples/adm_prior.py --random-weights adm-ffhq256 --max-steps 2 --dip-iterations 3
"""

from __future__ import annotations

import argparse
import time

import torch

from dipprior.diffusion import adm_unet, load_pretrained
from dipprior.diffusion.adm_checkpoint import adm_scheduler
from dipprior.dip import DIPConfig
from dipprior.experiments import degrade
from dipprior.io import load_image, sample_image
from dipprior.metrics import psnr
from dipprior.operators import make_task
from dipprior.pipeline import ClassicalBaseline, DIPBaseline, DIPInitializedSampler
from dipprior.pipeline.presets import method_configs, recommended_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a guided-diffusion .pt file (or any load_pretrained path)")
    src.add_argument("--random-weights", metavar="PRESET",
                     choices=["adm-ffhq256", "adm-imagenet256-uncond"])
    p.add_argument("--image", help="a photo (default: scikit-image's astronaut)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--task", default="inpaint", choices=["inpaint", "box", "sr", "denoise"])
    p.add_argument("--device", default=None)
    p.add_argument("--max-steps", type=int, default=None, help="cap every chain's steps")
    p.add_argument("--dip-iterations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.model:
        model, scheduler = load_pretrained(args.model, device=device)
    else:
        torch.manual_seed(args.seed)
        model, scheduler = adm_unet(args.random_weights).to(device).eval(), adm_scheduler()
    clean = (load_image(args.image) if args.image else sample_image("astronaut", args.size))
    op, y = degrade(clean, make_task(args.task, box=args.size // 4), args.seed)

    def cap(config):
        return config.replace(steps=min(config.steps, args.max_steps or config.steps))

    configs = method_configs(args.task)
    dip = DIPConfig(iterations=args.dip_iterations, progress=False)
    methods = {"DiffPIR (noise)": DIPInitializedSampler(model, scheduler, cap(configs["DDPM"]),
                                                        progress=False),
               "DIP": DIPBaseline(dip, device=device),
               "default": DIPInitializedSampler(model, scheduler, cap(recommended_config(op)),
                                                progress=False),
               "DIP->DDPM": DIPInitializedSampler(model, scheduler, cap(configs["DIP->DDPM"]),
                                                  dip=dip, progress=False)}
    if args.task != "denoise":
        methods = {"classical peer": ClassicalBaseline(), **methods}
    weights = "random weights (PSNR meaningless)" if args.random_weights else args.model
    print(f"{args.task}, {tuple(clean.shape[-2:])}, {weights}, {device}, seed {args.seed}")
    print(f"{'method':<18} {'PSNR':>7} {'NFE':>5} {'seconds':>9}")
    for name, method in methods.items():
        began = time.perf_counter()
        result = method(y, op, seed=args.seed)
        seconds = time.perf_counter() - began
        print(f"{name:<18} {float(psnr(result.image.cpu(), clean)):7.2f} "
              f"{int(result.nfe):>5} {seconds:9.1f}", flush=True)


if __name__ == "__main__":
    main()
