"""Linear degradation operators: denoising, inpainting, super-resolution, deblurring and
demosaicing, and
the registry of tasks by name (:func:`make_task`).

Every operator ``A`` maps a clean image ``x`` to an observation ``y = A x + n`` with Gaussian noise
of standard deviation :attr:`Operator.noise_sigma` (on the [0, 1] scale). All methods take
``(C, H, W)`` or ``(N, C, H, W)`` float tensors on any device and return the same rank.

The operators are linear, so ``forward``, ``adjoint``, ``pseudo_inverse`` and ``proximal`` are
scale-agnostic: they give the same answer for images in [0, 1] and in [-1, 1]. Only ``degrade``
(which adds noise of ``noise_sigma``) assumes [0, 1]; and ``proximal`` weighs the data term by
``1 / sigma_y**2``, so when working in [-1, 1] pass ``sigma=2 * op.noise_sigma``.

Example:
    >>> import torch
    >>> from dipprior.operators import SuperResolution
    >>> op = SuperResolution(4)
    >>> x = torch.rand(3, 32, 32)
    >>> op(x).shape
    torch.Size([3, 8, 8])
    >>> y = op.degrade(x, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(op(op.pseudo_inverse(y)), y, atol=1e-4)
    True
"""

from dipprior.operators.base import (
    CLASSICAL_T0,
    Denoise,
    Operator,
    check_image,
    classical_start,
)
from dipprior.operators.blur import (
    DEBLUR_BLUR,
    DEBLUR_SIGMA,
    WIENER_BALANCE,
    Blur,
    gaussian_kernel,
    motion_kernel,
    parse_blur,
    wiener,
)
from dipprior.operators.cg import conjugate_gradient
from dipprior.operators.demosaic import Demosaic, demosaicing
from dipprior.operators.inpaint import (
    Inpaint,
    biharmonic,
    center_box_mask,
    hole_scale,
    mask_from_image,
    random_box_mask,
    random_pixel_mask,
)
from dipprior.operators.registry import TASKS, Task, make_task
from dipprior.operators.superres import SuperResolution, bicubic, bicubic_taps

__all__ = [
    "DEBLUR_BLUR",
    "DEBLUR_SIGMA",
    "Blur",
    "Demosaic",
    "Denoise",
    "Inpaint",
    "Operator",
    "SuperResolution",
    "bicubic_taps",
    "check_image",
    "conjugate_gradient",
    "mask_from_image",
    "random_box_mask",
    "center_box_mask",
    "random_pixel_mask",
    "gaussian_kernel",
    "motion_kernel",
    "parse_blur",
    "TASKS",
    "Task",
    "make_task",
    "CLASSICAL_T0",
    "WIENER_BALANCE",
    "biharmonic",
    "bicubic",
    "wiener",
    "classical_start",
    "hole_scale",
    "demosaicing",
]
