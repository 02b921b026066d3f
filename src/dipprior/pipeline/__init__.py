"""DIP-initialised reverse diffusion with data consistency, and the baselines it is compared with.

:class:`DIPInitializedSampler` fits a Deep Image Prior to the observation, forward-diffuses its
output to an intermediate timestep ``t0`` and runs only the last reverse steps of a diffusion
prior, pulling every step's ``x0`` estimate towards the observation (DiffPIR-style half-quadratic
splitting).  Its settings are one :class:`SamplerConfig`: ``init="noise"`` is the DDPM-only
baseline (from pure noise at ``T - 1``), ``init="observation"`` starts from the pseudo-inverse of
the observation, ``init="classical"`` from the classical restoration (biharmonic, bicubic) or a
callable of the caller's own; :class:`DIPBaseline` (DIP alone), :class:`ClassicalBaseline`
(biharmonic / bicubic alone) and :class:`CBM3DBaseline` (the ``bm3d`` package, optional)
complete the comparison.

Modules: :mod:`~dipprior.pipeline.config` (the settings), :mod:`~dipprior.pipeline.start`
(``t0`` and the start state, pure functions), :mod:`~dipprior.pipeline.sampler` (the sampler),
:mod:`~dipprior.pipeline.inputs` (checking and splitting a call's inputs),
:mod:`~dipprior.pipeline.tasks` (the kind of task, the default DIP stage),
:mod:`~dipprior.pipeline.plan` (what a call runs per image: the one place settings resolve),
:mod:`~dipprior.pipeline.presets` (tuned settings, the time-budget front),
:mod:`~dipprior.pipeline.adapt` (adapting the prior to each image while it samples),
:mod:`~dipprior.pipeline.baselines`.
"""

from dipprior.pipeline.adapt import AdaptConfig
from dipprior.pipeline.baselines import CBM3DBaseline, ClassicalBaseline, DIPBaseline
from dipprior.pipeline.config import SamplerConfig, parse_t0
from dipprior.pipeline.plan import Plan
from dipprior.pipeline.result import SampleResult
from dipprior.pipeline.sampler import DIPInitializedSampler
from dipprior.pipeline.start import resolve_t0
from dipprior.pipeline.tasks import fit_dip

__all__ = [
    "AdaptConfig",
    "CBM3DBaseline",
    "ClassicalBaseline",
    "DIPBaseline",
    "DIPInitializedSampler",
    "Plan",
    "SampleResult",
    "SamplerConfig",
    "fit_dip",
    "parse_t0",
    "resolve_t0",
]
