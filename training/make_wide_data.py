"""Build the wider training set of the shipped prior (``runs/data/wide``) and its held-out photos.

Inputs (development data, never shipped):

* ``--cbsd432``: the CBSD432 folder.  Every 27th photo in sorted order, from the 14th, is held out
  (``runs/data/val``, 16 photos); the other 416 are linked into ``runs/data/train`` and
  ``runs/data/wide``.
* ``--imagenet``: the 1000 photos of github.com/EliSchwartz/imagenet-sample-images (commit
  bc69043e2862758a1906c6a24a792bb28c6bb2ff; one photo per ImageNet-1k class; ImageNet's terms:
  non-commercial research and education), filtered to 881: greyscale files, files with a
  shorter side under 256 px and RGB files with grey content dropped (``git archive`` the commit,
  keep ``*.JPEG``, then the filter below).  Each is downscaled by 0.75 (Lanczos; it softens the
  JPEG blocks) and saved as PNG; every 21st from the 11th is held out (``runs/data/val_imagenet``,
  42 photos, for choosing settings outside BSD), the other 839 join ``runs/data/wide``.

None of these photos is in a test set (CBSD68, Kodak24, Urban100) or among the scikit-image
and imageio photos the demo uses.

    python training/make_wide_data.py --cbsd432 ../shared/data/train/CBSD432 \\
        --imagenet path/to/imagenet-sample-images --out runs/data
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image


def keep(path: Path) -> bool:
    """The filter: RGB, shorter side >= 256, not grey content in an RGB file."""
    with Image.open(path) as image:
        if image.mode != "RGB" or min(image.size) < 256:
            return False
        small = np.asarray(image.resize((32, 32))).astype(int)
    return not (np.abs(small[..., 0] - small[..., 1]).max() < 3
                and np.abs(small[..., 1] - small[..., 2]).max() < 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cbsd432", required=True)
    p.add_argument("--imagenet", required=True, help="folder of the sample photos (*.JPEG)")
    p.add_argument("--out", default="runs/data")
    args = p.parse_args()
    out = Path(args.out)
    for sub in ("train", "val", "wide", "val_imagenet"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sorted(os.listdir(args.cbsd432))):
        source = (Path(args.cbsd432) / name).resolve()
        for sub in (["val"] if i % 27 == 13 else ["train", "wide"]):
            link = out / sub / name
            if not link.exists():
                link.symlink_to(source)
    photos = [q for q in sorted(Path(args.imagenet).iterdir()) if q.suffix == ".JPEG"]
    photos = [q for q in photos if keep(q)]
    for i, path in enumerate(photos):
        with Image.open(path) as image:
            w, h = image.size
            small = image.convert("RGB").resize((round(w * 0.75), round(h * 0.75)),
                                                Image.Resampling.LANCZOS)
        sub = "val_imagenet" if i % 21 == 10 else "wide"
        small.save(out / sub / f"inet_{path.stem.split('_')[0]}.png")
    print({sub: len(os.listdir(out / sub)) for sub in ("train", "val", "wide", "val_imagenet")})


if __name__ == "__main__":
    main()
