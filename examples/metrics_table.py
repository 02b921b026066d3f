"""Score noisy versions of the bundled sample images with the seed's metric table.

Each image (a 128x128 center crop of a scikit-image photo) gets Gaussian noise of sigma 25/255,
added in float without clipping (the CBSD68 protocol); the metrics clamp the noisy prediction to
[0, 1] as they do for every prediction. Runs offline in a few seconds:

    python examples/metrics_table.py [--sigma 25] [--seed 0] [--size 128] [--csv table.csv]
"""

from __future__ import annotations

import argparse

import torch

from dipprior.io import sample_image
from dipprior.metrics import evaluate, results_table

IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="center crop size")
    parser.add_argument("--csv", default=None, help="also write the table as CSV here")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for name in IMAGES:
        clean = sample_image(name, size=args.size)
        noise = torch.randn(clean.shape, generator=generator)
        noisy = clean + args.sigma / 255 * noise  # no clipping
        rows.append({"Image": name, **evaluate(noisy, clean)})

    print(f"Noisy vs clean: Gaussian noise sigma={args.sigma:g}/255, seed={args.seed}, "
          f"{args.size}x{args.size} center crops (prediction clamped to [0, 1] for scoring)\n")
    table = results_table(rows)
    print(table)
    if args.csv:
        table.to_csv(args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
