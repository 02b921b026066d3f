"""Image I/O: load and save images as (3, H, W) float32 tensors in [0, 1], bundled sample images.

Reading and writing go through imageio (scikit-image's I/O library), except 16-bit PNGs, which
Pillow (imageio's backend) truncates to 8 bits; those use the small PNG codec in ``dipprior._png``.

Example:
    >>> from dipprior.io import sample_image, save_image, load_image
    >>> img = sample_image("astronaut", size=128)          # (3, 128, 128) float32 in [0, 1]
    >>> path = save_image(img, "astronaut.png")            # atomic; returns the Path
    >>> load_image(path).shape
    torch.Size([3, 128, 128])
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from dipprior import _png
from dipprior._atomic import atomic_write_bytes

__all__ = [
    "IMAGE_SUFFIXES",
    "SAMPLE_IMAGES",
    "center_crop",
    "load_image",
    "load_kernel",
    "sample_image",
    "save_image",
    "to_numpy",
    "to_tensor",
]

# File name endings taken as images when a folder is read.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Colour photographs that scikit-image ships inside its wheel (no download, no pooch needed).
SAMPLE_IMAGES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)

# Pillow modes that are colour but not RGB; they are converted to RGB on reading.
_CONVERT_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")
_SAVE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
# Float inputs may overshoot [0, 1] by rounding error only.
_RANGE_TOL = 1e-3


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert an image array (H, W, 3) / (N, H, W, 3) to a float32 tensor (3, H, W) / (N, 3, H, W).

    uint8 is divided by 255, uint16 by 65535, bool maps to {0, 1}; float arrays must already be in
    [0, 1] (they are not rescaled).
    """
    if isinstance(array, torch.Tensor):
        raise TypeError("array: expected a numpy array, got a torch.Tensor (already a tensor)")
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"array: expected shape (H, W, 3) or (N, H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        out = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("array: contains NaN or inf")
        if out.size and (out.min() < -_RANGE_TOL or out.max() > 1 + _RANGE_TOL):
            raise ValueError(
                f"array: float values must lie in [0, 1], got [{out.min():.4g}, {out.max():.4g}]"
                " (divide 8-bit data by 255)"
            )
        out = np.clip(out, 0.0, 1.0)
    else:
        raise TypeError(f"array: expected uint8, uint16, bool or float dtype, got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(out, -1, -3)))


def to_numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert a (3, H, W) or (N, 3, H, W) image tensor to a float array (H, W, 3) / (N, H, W, 3).

    float64 stays float64; every other dtype becomes float32. Values are not changed.
    """
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu()
        if tensor.dtype != torch.float64:
            tensor = tensor.float()
        array = tensor.numpy()
    elif isinstance(tensor, np.ndarray):
        array = tensor if tensor.dtype == np.float64 else tensor.astype(np.float32)
    else:
        raise TypeError(f"tensor: expected a torch.Tensor or numpy array, got {type(tensor)}")
    if array.ndim not in (3, 4) or array.shape[-3] != 3:
        raise ValueError(f"tensor: expected shape (3, H, W) or (N, 3, H, W), got {array.shape}")
    return np.ascontiguousarray(np.moveaxis(array, -3, -1))


def center_crop(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop the central ``size`` (int or (h, w)) region of a tensor (..., H, W).

    When the margin is odd the extra row/column is dropped at the bottom/right.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img: expected a torch.Tensor (..., H, W), got {type(img)}")
    if img.ndim < 2:
        raise ValueError(f"img: expected at least 2 dimensions (..., H, W), got {tuple(img.shape)}")
    h, w = _crop_size(size)
    height, width = img.shape[-2:]
    if h > height or w > width:
        raise ValueError(f"size: crop ({h}, {w}) is larger than the image ({height}, {width})")
    top, left = (height - h) // 2, (width - w) // 2
    return img[..., top:top + h, left:left + w]


def _crop_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        pair = (size, size)
    elif isinstance(size, (tuple, list)):
        pair = tuple(size)
    else:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in pair
    ):
        raise ValueError(f"size: expected a positive int or a pair (h, w) of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Load an image file as a float32 tensor (3, H, W) in [0, 1].

    8- and 16-bit PNG, JPEG and whatever else imageio reads. Grey images are repeated to three
    channels. An alpha channel is dropped (colour values kept as stored, not composited) with a
    warning when it is not fully opaque.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise PermissionError(f"path: cannot read {str(path)!r} (permission denied)") from None
    header = _png.read_header(data)
    try:
        if header is not None:
            _png.check_size(header["width"], header["height"])
        if header is not None and header["bit_depth"] == 16:
            array = _png.decode_png(data)
        else:
            array = _imageio_read(data)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not an image we read"
        raise ValueError(f"path: cannot read {str(path)!r} as an image ({exc})") from exc
    try:
        return to_tensor(_to_rgb(np.asarray(array), name=str(path)))
    except TypeError as exc:  # e.g. a 32-bit integer TIFF
        raise ValueError(f"path: {str(path)!r} has unsupported pixel data ({exc})") from exc


def load_kernel(path: str | os.PathLike) -> torch.Tensor:
    """A blur kernel from a ``.npy`` file (a 2D array, read without pickle) or an image (its
    mean over colour channels), as float64 (H, W); :class:`~dipprior.operators.Blur` checks and
    normalises it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"kernel: expected a path to a .npy file or an image, got "
                        f"{type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"kernel: no such file {str(path)!r}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except PermissionError:
            raise PermissionError(f"kernel: cannot read {str(path)!r} (permission denied)"
                                  ) from None
        except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty file
            raise ValueError(f"kernel: cannot read {str(path)!r} as a .npy array "
                             f"({exc or type(exc).__name__})") from None
        if array.dtype.kind not in "fiu":
            raise ValueError(f"kernel: {str(path)!r} holds {array.dtype} values, not numbers")
        if array.ndim != 2:
            raise ValueError(f"kernel: {str(path)!r} holds shape {array.shape}, expected a 2D "
                             "kernel")
        return torch.from_numpy(array.astype(np.float64))
    return load_image(path).double().mean(0)


def _imageio_read(data: bytes) -> np.ndarray:
    # imageio is what scikit-image's io reads with; called directly so that Pillow can be asked
    # to convert colour models that are not RGB (a CMYK JPEG would otherwise look like RGBA).
    import imageio.v3 as iio

    with warnings.catch_warnings():
        # imageio probes its legacy plugins on unknown files and some warn about themselves
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            mode = iio.immeta(data).get("mode")
        except Exception:  # noqa: BLE001 - not every plugin reports metadata
            mode = None
        if mode in _CONVERT_TO_RGB:
            return iio.imread(data, mode="RGB")
        return iio.imread(data)


def _to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """(H, W), (H, W, 1..4) -> (H, W, 3), dropping alpha with a warning when it matters."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"path: {name!r} is not a single grey/RGB/RGBA image "
                         f"(array shape {array.shape})")
    if array.shape[2] in (2, 4):
        alpha, array = array[:, :, -1], array[:, :, :-1]
        opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
        transparent = float(np.mean(alpha != opaque))
        if transparent > 0:
            warnings.warn(
                f"{name}: alpha channel dropped ({100 * transparent:.1f}% of pixels not fully "
                "opaque); colour values kept as stored, not composited",
                UserWarning,
                stacklevel=3,
            )
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def save_image(
    tensor: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    bits: int = 8,
    quality: int = 95,
) -> Path:
    """Save a (3, H, W) image, or a (1, H, W) grey one, in [0, 1] as PNG or JPEG (chosen by the
    extension), atomically; a grey image is written as a one-channel file.

    Values must lie in [0, 1] (a rounding overshoot of up to 1e-3 is clamped; 0..255 data is
    refused, not clipped to white) and are rounded to ``bits`` (8, or 16 for PNG only). JPEG
    uses ``quality`` (1..100). The file is written to a temporary name in the same directory and
    renamed, so a failure never leaves a half-written image behind. Returns the path.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path: unsupported extension {path.suffix!r}; use one of "
                         f"{sorted(_SAVE_FORMATS)}")
    if bits not in (8, 16):
        raise ValueError(f"bits: expected 8 or 16, got {bits!r}")
    if bits == 16 and fmt != "png":
        raise ValueError("bits: 16-bit output needs a .png path (JPEG is 8-bit)")
    if not (isinstance(quality, int) and 1 <= quality <= 100):
        raise ValueError(f"quality: expected an int in 1..100, got {quality!r}")
    if not isinstance(tensor, (torch.Tensor, np.ndarray)):
        raise TypeError(f"tensor: expected a torch.Tensor or numpy array, got {type(tensor)}")
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"tensor: expected shape (3, H, W) or (1, H, W) (grey), got "
                         f"{tuple(tensor.shape)}")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:  # a PNG of no pixels nothing can read
        raise ValueError(f"tensor: empty image of shape {tuple(tensor.shape)}")
    if not (tensor.dtype.is_floating_point if isinstance(tensor, torch.Tensor)
            else np.issubdtype(tensor.dtype, np.floating)):
        raise TypeError(f"tensor: expected a floating point image in [0, 1], got {tensor.dtype}")
    grey = tensor.shape[0] == 1
    if grey:
        tensor = tensor.repeat(3, 1, 1) if isinstance(tensor, torch.Tensor) else np.repeat(
            tensor, 3, axis=0)
    array = to_numpy(tensor).astype(np.float64)
    if grey:
        array = array[..., 0]
    if not np.isfinite(array).all():
        raise ValueError("tensor: contains NaN or inf")
    if array.size and (array.min() < -_RANGE_TOL or array.max() > 1 + _RANGE_TOL):
        raise ValueError(
            f"tensor: float values must lie in [0, 1], got [{array.min():.4g}, "
            f"{array.max():.4g}]; divide 0..255 data by 255 (or clamp(0, 1) to clip on purpose)"
        )
    scale = 65535 if bits == 16 else 255
    quantised = np.round(np.clip(array, 0.0, 1.0) * scale).astype(np.uint16 if bits == 16 else
                                                                  np.uint8)
    if bits == 16:
        data = _png.encode_png(quantised)
    else:
        import imageio.v3 as iio

        kwargs = {"quality": quality} if fmt == "jpeg" else {}
        data = iio.imwrite("<bytes>", quantised, extension=path.suffix.lower(), **kwargs)
    return atomic_write_bytes(path, data)


def sample_image(name: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A colour photo bundled with scikit-image as a float32 tensor (3, H, W) in [0, 1].

    ``name`` is one of :data:`SAMPLE_IMAGES`; ``size`` (int or (h, w)) takes a center crop.

    >>> sample_image("chelsea", size=(64, 96)).shape
    torch.Size([3, 64, 96])
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name: unknown sample image {name!r}; choose one of {SAMPLE_IMAGES}")
    img = to_tensor(_sample_array(name))
    return img if size is None else center_crop(img, size).contiguous()


@functools.cache
def _sample_array(name: str) -> np.ndarray:
    from skimage import data

    array = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    array.setflags(write=False)  # cached: nobody may modify it
    return array
