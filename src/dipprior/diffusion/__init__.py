"""The diffusion prior: noise schedule, UNet (ours, or guided-diffusion's ADM), training, safe
checkpoints and sampling.

>>> from dipprior.diffusion import Scheduler, UNet, sample
"""

from dipprior.diffusion.adapters import (
    DenoiserPrior,
    DiffusersUNet,
    load_diffusers,
    scheduler_from_diffusers,
)
from dipprior.diffusion.adm import ADMUNet
from dipprior.diffusion.adm_checkpoint import ADM_PRESETS, adm_unet, load_adm
from dipprior.diffusion.checkpoint import (
    available_pretrained,
    is_checkpoint,
    load,
    save,
)
from dipprior.diffusion.data import Augmentation, PatchDataset
from dipprior.diffusion.ensemble import SelfEnsemble
from dipprior.diffusion.loading import load_pretrained
from dipprior.diffusion.sampling import reverse_diffusion, sample
from dipprior.diffusion.scheduler import Scheduler, SchedulerOutput
from dipprior.diffusion.timesteps import TimestepDistribution
from dipprior.diffusion.train import TrainResult, train
from dipprior.diffusion.unet import UNet

__all__ = [
    "Scheduler",
    "SchedulerOutput",
    "UNet",
    "ADMUNet",
    "ADM_PRESETS",
    "adm_unet",
    "load_adm",
    "PatchDataset",
    "Augmentation",
    "TimestepDistribution",
    "train",
    "TrainResult",
    "save",
    "load",
    "is_checkpoint",
    "load_pretrained",
    "available_pretrained",
    "sample",
    "reverse_diffusion",
    "SelfEnsemble",
    "DenoiserPrior",
    "DiffusersUNet",
    "load_diffusers",
    "scheduler_from_diffusers",
]
