"""Comparison and ablation grids: restoration methods over a set of images -> tables and plots.

* :func:`compare` runs several methods on every image and scores them (PSNR, SSIM, MSE, MAE,
  Delta E, NFE, seconds) into a :class:`~dipprior.metrics.ResultsTable` with per-method averages.
* :func:`quality_vs_nfe` traces quality against model evaluations and wall-clock for the three
  initialisations; :func:`plot_quality_vs_nfe` draws it (matplotlib, optional).
* :func:`t0_ablation` scores fixed start timesteps and ``"auto"`` from one DIP fit per image.

All run on :func:`run_over_images`, which is data-parallel under ``torchrun``: call
:func:`init_distributed` first; rank ``r`` of ``w`` takes images ``r, r + w, ...`` and every rank
receives the gathered rows (write files from rank 0 only).  The degradation of image ``i``
(noise, random mask) and every method's randomness use ``seed + i``, so the numbers do not
depend on the number of processes.

Example:
    >>> import torch
    >>> from dipprior.operators import Denoise
    >>> images = {"flat": torch.full((3, 16, 16), 0.5)}
    >>> table = compare(images, Denoise(0.1), {"Identity": lambda y, op, seed: y},
    ...                 progress=False)
    >>> [row["Image"] for row in table.rows], table.columns[:3]
    (['flat', 'Average'], ['Image', 'Method', 'PSNR'])
"""

from dipprior.experiments.ablations import best_fixed_t0, t0_ablation
from dipprior.experiments.compare import COLUMNS, compare, paired_difference
from dipprior.experiments.curves import quality_vs_nfe
from dipprior.experiments.data import degrade, load_folder, prepare_images
from dipprior.experiments.methods import (
    METHOD_LABELS,
    WARM_START,
    classical_label,
    run_method,
    standard_methods,
)
from dipprior.experiments.plots import plot_psnr_vs_seconds, plot_quality_vs_nfe, save_figure
from dipprior.experiments.runner import (
    Case,
    DIPCache,
    fit_dip_cached,
    init_distributed,
    run_over_images,
)

__all__ = [
    "COLUMNS",
    "METHOD_LABELS",
    "WARM_START",
    "classical_label",
    "Case",
    "DIPCache",
    "best_fixed_t0",
    "compare",
    "degrade",
    "fit_dip_cached",
    "init_distributed",
    "load_folder",
    "paired_difference",
    "plot_psnr_vs_seconds",
    "plot_quality_vs_nfe",
    "prepare_images",
    "quality_vs_nfe",
    "run_method",
    "run_over_images",
    "save_figure",
    "standard_methods",
    "t0_ablation",
]
