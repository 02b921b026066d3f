"""Write ``adm_reference.json`` from OpenAI's guided-diffusion code (not from dipprior).

It holds what the fast tests compare ``ADMUNet`` with, so that the default test run checks it
against the reference and not against itself:

* ``shapes``: the state_dict key -> shape of guided-diffusion's ``create_model`` for the two
  published checkpoints (their README and DPS's model config flags), built on the meta device;
* ``tiny``: a small ``UNetModel`` with every parameter drawn by :func:`fill` (key i in sorted
  order: 0.05 * N(0, 1) from ``Generator().manual_seed(i)``), one input, two timesteps and its
  output (epsilon and variance channels).

    DIPPRIOR_GUIDED_DIFFUSION=/path/to/guided-diffusion python tests/data/make_adm_reference.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

TINY = dict(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
            attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_heads=4,
            num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True)


def fill(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random and reproducible from its key's rank in sorted order."""
    with torch.no_grad():
        params = dict(model.named_parameters())
        for i, name in enumerate(sorted(params)):
            p = params[name]
            p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return model.eval()


def tiny_input() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(123))
    return x, torch.tensor([10, 700])


def main() -> None:
    sys.path.insert(0, os.environ["DIPPRIOR_GUIDED_DIFFUSION"])
    from guided_diffusion.script_util import create_model
    from guided_diffusion.unet import UNetModel

    flags = {"adm-imagenet256-uncond": dict(num_channels=256, num_res_blocks=2,
                                            attention_resolutions="32,16,8"),
             "adm-ffhq256": dict(num_channels=128, num_res_blocks=1,
                                 attention_resolutions="16", num_heads=4)}
    shapes = {}
    for name, f in flags.items():
        with torch.device("meta"):
            model = create_model(image_size=256, learn_sigma=True, num_head_channels=64,
                                 use_scale_shift_norm=True, resblock_updown=True, **f)
        shapes[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    model = fill(UNetModel(**TINY))
    x, t = tiny_input()
    with torch.no_grad():
        out = model(x, t)
    tiny = {"flags": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
            "eps": [round(v, 7) for v in out[:, :3].flatten().tolist()],
            "var": [round(v, 7) for v in out[:, 3:].flatten().tolist()]}
    path = Path(__file__).with_name("adm_reference.json")
    path.write_text(json.dumps({"shapes": shapes, "tiny": tiny}) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
