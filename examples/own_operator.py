"""Your own operator: colour to grey, restored by colourisation (docs/own_operator.md).

``Greyscale`` is a linear degradation written as a subclass of ``dipprior.operators.Operator``
(``_forward`` and ``_adjoint``, nothing else); ``Colourisation`` is the same degradation with what
the library should know about undoing it (its classical restoration and the ``t0`` of a chain
from it), registered as the task ``"colourise"``.  Importing this module registers the task, so
``make_task``, ``dipprior.experiments.compare`` and the CLI's code (``dipprior.cli.main``) can use
it.  Run it to see each door once, at tiny settings (well under a minute on a CPU):

    python examples/own_operator.py                   # 32x32 crops, short chains, 20 DIP steps
    python examples/own_operator.py --size 128 --steps 25 --dip-iterations 1000   # real settings

``--model`` defaults to the shipped prior.
"""

import argparse

import torch

from dipprior.operators import Operator
from dipprior.operators.registry import Param, Task, register

#: ITU-R BT.601 luma weights (they sum to 1)
LUMA = (0.299, 0.587, 0.114)


class Greyscale(Operator):
    """Colour to grey: every channel of ``y`` is the luma of ``x``, ``y = 1 (w^T x) + noise``."""

    keeps_grey = False  # a grey observation is what this operator makes: it hides the colours

    def __init__(self, sigma: float = 0.0) -> None:
        self.noise_sigma = sigma

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 3, H, W)
        return (self._weights(x) * x).sum(1, keepdim=True).repeat(1, 3, 1, 1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # A^T y = w (1^T y)
        return self._weights(y) * y.sum(1, keepdim=True)


class Colourisation(Greyscale):
    """:class:`Greyscale` with its task: the grey image itself as classical restoration (it
    fits the observation exactly: the weights sum to 1) and a high ``t0``, since every colour
    is missing."""

    task = "colourise"           # the key of its settings: an unknown key gets the noise-free ones
    classical_name = "Grey"      # the classical peer's name in tables

    def classical(self, y: torch.Tensor) -> torch.Tensor:  # one observation (3, H, W)
        return y.mean(0, keepdim=True).repeat(3, 1, 1)

    def classical_t0(self, num_train_timesteps: int = 1000) -> int:
        return num_train_timesteps // 2  # not tuned: a start without colour needs a long chain

    def crop(self, top: int, left: int, height: int, width: int) -> "Colourisation":
        return self  # each pixel alone: any window of the image is the same operator


def _make_colourise(*, real: bool, luma_sigma: float) -> Colourisation:
    """The task's operator: ``make_task("colourise", luma_sigma=...)``, ``--sigma`` in the CLI."""
    return Colourisation(luma_sigma / 255)


register(Task("colourise", "colourisation (colour to grey)", _make_colourise,
              (Param("luma_sigma", float, 0.0, "noise std, 0..255 units", option="--sigma"),)))


def main(argv: list[str] | None = None) -> None:
    from dipprior import DIPInitializedSampler, metrics
    from dipprior.diffusion import load_pretrained
    from dipprior.experiments import compare, standard_methods
    from dipprior.io import sample_image
    from dipprior.operators import make_task

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a prior for load_pretrained (default: the shipped one)")
    p.add_argument("--size", type=int, default=32, help="center crop side")
    p.add_argument("--steps", type=int, default=5, help="reverse steps per chain")
    p.add_argument("--dip-iterations", type=int, default=20, help="DIP iterations")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    model, scheduler = load_pretrained(args.model)
    progress = not args.no_progress
    clean = sample_image("astronaut", size=args.size)

    # 1. the bare subclass: the default start is its pseudo-inverse
    op = Greyscale()
    y = op.degrade(clean)
    sampler = DIPInitializedSampler(model, scheduler, steps=args.steps, progress=progress)
    plan = sampler.plan(y, op)[0]
    result = sampler(y, op, seed=0)
    print(f"Greyscale, default ({plan.init}, t0 {plan.t0}, {plan.nfe} NFE): "
          f"{metrics.psnr(result.image, clean):.2f} dB")

    # 2. a DIP start
    dip_start = DIPInitializedSampler(model, scheduler, init="dip", steps=args.steps,
                                      dip={"iterations": args.dip_iterations},
                                      progress=progress)
    result = dip_start(y, op, seed=0)
    print(f"Greyscale, init='dip' (t0 {result.t0}, {result.nfe} NFE): "
          f"{metrics.psnr(result.image, clean):.2f} dB")

    # 3. with its task's classical restoration and t0
    op = Colourisation()
    result = sampler(op.degrade(clean), op, seed=0)
    print(f"Colourisation, default (grey start, t0 {result.t0}): "
          f"{metrics.psnr(result.image, clean):.2f} dB")

    # 4. every method of the paper table, through the registry
    images = {name: sample_image(name, size=args.size) for name in ("astronaut", "coffee")}
    methods = standard_methods(model, scheduler, settings={"steps": args.steps},
                               ddpm_steps=args.steps, dip={"iterations": args.dip_iterations},
                               task="colourise", progress=progress)
    print(compare(images, make_task("colourise"), methods, seed=0,
                  progress=progress).to_markdown())


if __name__ == "__main__":
    main()
