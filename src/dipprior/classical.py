"""Classical restorations: what a user would try first, as peers and as starts for the chain.

* holes (:class:`~dipprior.operators.Inpaint`): scikit-image's biharmonic inpainting;
* low resolution (:class:`~dipprior.operators.SuperResolution`): bicubic up-sampling (Pillow's
  cubic convolution, a = -0.5, as MATLAB's ``imresize``);
* blur (:class:`~dipprior.operators.Blur`): scikit-image's Wiener deconvolution (Laplacian
  regulariser, ``balance`` tuned on CBSD432 crops);
* Gaussian noise (:class:`~dipprior.operators.Denoise`): the observation itself as a start (the
  denoising peer is CBM3D, :func:`dipprior.denoisers.cbm3d`, an optional package).

Every function takes ``(observation, operator)`` and returns an image of the operator's input
shape on the observation's device, the signature a callable ``init`` of
:class:`~dipprior.pipeline.SamplerConfig` has.
"""

from __future__ import annotations

import numpy as np
import torch

from dipprior.operators import Blur, Inpaint, Operator, SuperResolution

__all__ = ["biharmonic", "bicubic", "wiener", "classical_start", "WIENER_BALANCE"]

#: ``skimage.restoration.wiener``'s balance, tuned on 6 held-out CBSD432 crops (noise 0.01):
#: best 0.003 for Gaussian blur std 2 (22.92 dB; 0.002: 22.89), 0.002 for motion blur size 15
#: (26.65 dB); unsupervised Wiener, Richardson-Lucy and Tikhonov scored lower
#: (docs/results/deblur/tuning/peer.jsonl)
WIENER_BALANCE = 0.002


def _image(observation: torch.Tensor, name: str = "observation") -> torch.Tensor:
    if not isinstance(observation, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(observation).__name__}")
    if observation.dim() != 3:
        raise ValueError(f"{name}: expected one image (C, H, W), got shape "
                         f"{tuple(observation.shape)}")
    return observation


def biharmonic(observation: torch.Tensor, operator: Inpaint) -> torch.Tensor:
    """Fill the unknown pixels of an inpainting observation with
    ``skimage.restoration.inpaint_biharmonic`` (known pixels are kept as observed).

    >>> from dipprior.operators import Inpaint
    >>> op = Inpaint(torch.tensor([[1.0, 0.0, 1.0]]))
    >>> biharmonic(torch.tensor([[[0.2, 0.0, 0.4]]] * 3), op)[0]
    tensor([[0.2000, 0.3000, 0.4000]])
    """
    from skimage.restoration import inpaint_biharmonic

    if not isinstance(operator, Inpaint):
        raise TypeError(f"operator: biharmonic fills the holes of an Inpaint operator, got "
                        f"{type(operator).__name__}")
    y = _image(observation)
    operator.forward(y)  # checks that the mask matches
    image = y.detach().cpu().double().numpy()
    missing = (operator.mask.cpu().numpy() == 0)
    missing = np.broadcast_to(missing, image.shape).copy()
    out = np.empty_like(image)
    if all((missing[c] == missing[0]).all() for c in range(1, image.shape[0])):
        out[:] = inpaint_biharmonic(np.moveaxis(image, 0, -1).copy(), missing[0],
                                    channel_axis=-1).transpose(2, 0, 1)
    else:  # a mask per channel: one channel at a time
        for c in range(image.shape[0]):
            out[c] = inpaint_biharmonic(image[c], missing[c])
    return torch.from_numpy(out).to(y.device, torch.float32)


def bicubic(observation: torch.Tensor, operator: SuperResolution) -> torch.Tensor:
    """Up-sample a low-resolution observation by the operator's factor with Pillow's bicubic
    (cubic convolution, a = -0.5: MATLAB's ``imresize(y, factor)``), not clamped.

    >>> from dipprior.operators import SuperResolution
    >>> bicubic(torch.full((3, 4, 4), 0.25), SuperResolution(2)).shape
    torch.Size([3, 8, 8])
    """
    from PIL import Image

    if not isinstance(operator, SuperResolution):
        raise TypeError(f"operator: bicubic up-samples for a SuperResolution operator, got "
                        f"{type(operator).__name__}")
    y = _image(observation)
    h, w = operator.input_shape(y.shape)[-2:]
    channels = [np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.Resampling.BICUBIC))
                for c in y.detach().cpu().float().numpy()]
    return torch.from_numpy(np.stack(channels)).to(y.device, torch.float32)


def wiener(observation: torch.Tensor, operator: Blur, balance: float = WIENER_BALANCE
           ) -> torch.Tensor:
    """Deblur with ``skimage.restoration.wiener`` (Laplacian regulariser, circular boundary as
    :class:`~dipprior.operators.Blur`), per channel, not clamped.

    >>> from dipprior.operators import Blur, gaussian_kernel
    >>> wiener(torch.full((3, 16, 16), 0.5), Blur(gaussian_kernel(3, 1.0))).shape
    torch.Size([3, 16, 16])
    """
    from skimage.restoration import wiener as skimage_wiener

    if not isinstance(operator, Blur):
        raise TypeError(f"operator: wiener deconvolves for a Blur operator, got "
                        f"{type(operator).__name__}")
    y = _image(observation)
    operator.forward(y)  # checks the image against the kernel
    psf = operator.kernel.numpy()
    out = np.stack([skimage_wiener(c, psf, balance, clip=False)
                    for c in y.detach().cpu().double().numpy()])
    return torch.from_numpy(out).to(y.device, torch.float32)


def classical_start(observation: torch.Tensor, operator: Operator) -> torch.Tensor:
    """The classical restoration of ``observation`` for ``operator``'s kind: biharmonic for
    holes, bicubic for low resolution, Wiener deconvolution for blur, the observation itself for
    Gaussian denoising, and the pseudo-inverse for any other operator."""
    if isinstance(operator, Inpaint):
        return biharmonic(observation, operator)
    if isinstance(operator, SuperResolution):
        return bicubic(observation, operator)
    if isinstance(operator, Blur):
        return wiener(observation, operator)
    return operator.pseudo_inverse(_image(observation))
