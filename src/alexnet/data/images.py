"""One image file to the paper's 256×256 RGB input (§2): shorter side to 256, centre crop.

Every reader (folders with PIL, folders with torchvision's JPEG decoder, ``prepare``) goes
through ``resized_size`` and ``center_box`` so they cut the same window. Any file that cannot
be read becomes a ``DataError`` naming it, on one line.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

#: The paper's preprocessed image (§2): the shorter side rescaled to 256, then the central
#: 256×256 patch. Training crops 224×224 windows out of it (``alexnet.model.spec.CROP``).
IMAGE_SIZE = 256

#: White: what a transparent pixel shows, as on the web page the image came from.
ALPHA_BACKGROUND = (255, 255, 255)

DECODERS = ("pil", "torchvision")

#: The first bytes of the common formats: a file that starts like one but cannot be opened is
#: a damaged image, not some other kind of file.
SIGNATURES = {"JPEG": b"\xff\xd8", "PNG": b"\x89PNG", "GIF": b"GIF8", "BMP": b"BM", "WEBP": b"RIFF"}


def resized_size(width: int, height: int, size: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(width, height) with the shorter side ``size`` and the aspect ratio kept; the longer side
    is truncated as torchvision's ``Resize(size)`` does, so both decoders agree."""
    if width <= height:
        return size, max(size, int(size * height / width))
    return max(size, int(size * width / height)), size


def center_box(width: int, height: int, size: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(left, top) of the central ``size``×``size`` window of a resized image."""
    return (width - size) // 2, (height - size) // 2


def unreadable(path: Union[str, Path], what: str = "an image", error: Optional[OSError] = None) -> str:
    """The one line for an entry that cannot be opened: a symlink loop, a broken symlink, no
    permission (from ``error``, what opening it raised, or else from a stat of it), and that
    ``--skip-bad`` goes on without it. ``what``: what the entry should have been."""
    if error is None:
        try:
            os.stat(path)
        except OSError as raised:
            error = raised
    code = getattr(error, "errno", None)
    if code == errno.ELOOP:
        reason = "a symlink loop (following the link never reaches a file or folder)"
    elif code == errno.ENOENT and os.path.islink(path):
        reason = f"a broken symlink (its target {os.readlink(path)} does not exist)"
    elif code in (errno.EACCES, errno.EPERM):
        reason = "permission denied (this user may not read it)"
    else:
        reason = f"cannot be read ({getattr(error, 'strerror', None) or error})"
    # the advice reads right both in the error and in the list of what --skip-bad skipped
    return f"{path}: {reason}, where {what} should be; fix or remove it (--skip-bad skips it)"


def read_bytes(path: Union[str, Path]) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EACCES, errno.EPERM) or os.path.islink(path):
            raise DataError(unreadable(path, "an image", error)) from None
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not data:
        raise DataError(f"{path}: empty file (0 bytes), not an image")
    return data


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette, CMYK and alpha images as 8-bit RGB; transparency over white."""
    if image.mode.startswith("I"):  # 16/32-bit grayscale (PNG): keep the top 8 bits
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_pil(data: bytes, path: Union[str, Path]) -> Image.Image:
    """The file's bytes as an RGB PIL image, fully decoded (a truncated file fails here)."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # PIL raises UnidentifiedImageError, but also others for odd headers
        kind = next((name for name, magic in SIGNATURES.items() if data.startswith(magic)), None)
        if kind:
            raise DataError(f"{path}: truncated or corrupt {kind} image (its header is unreadable)") from None
        raise DataError(f"{path}: not an image file (PIL cannot identify its format)") from None
    try:
        image.load()
        return to_rgb(image)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        kind = f"{image.format} image" if image.format else "image"
        raise DataError(f"{path}: truncated or corrupt {kind} ({reason})") from None


def load_image_array(path: Union[str, Path], size: int = IMAGE_SIZE) -> np.ndarray:
    """The preprocessed image as a uint8 array (3, size, size), with PIL's bilinear resize."""
    image = decode_pil(read_bytes(path), path)
    width, height = resized_size(*image.size, size)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.BILINEAR)
    left, top = center_box(width, height, size)
    pixels = np.asarray(image.crop((left, top, left + size, top + size)))  # (size, size, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_image(path: Union[str, Path], size: int = IMAGE_SIZE) -> torch.Tensor:
    """PIL path: a uint8 tensor (3, size, size)."""
    return torch.from_numpy(load_image_array(path, size))


def decode_jpeg(data: Union[bytes, np.ndarray]) -> torch.Tensor:
    """JPEG bytes -> uint8 (3, H, W) RGB with torchvision's libjpeg-turbo decoder. torchvision
    0.29 deprecates its decoders in favour of TorchCodec; until they go, they are the fastest
    here (the warning is silenced: it would repeat for every image)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as torchvision_decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torchvision_decode_jpeg(encoded, mode=ImageReadMode.RGB)


def load_image_torchvision(path: Union[str, Path], size: int = IMAGE_SIZE) -> torch.Tensor:
    """torchvision path: libjpeg-turbo decoding and an antialiased bilinear resize on tensors.
    Anything but a plain JPEG (PNG, alpha, CMYK, a broken file) goes the PIL way, so odd files
    are converted and bad ones named exactly as there."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    data = read_bytes(path)
    if data[:2] != b"\xff\xd8":
        return load_image(path, size)
    try:
        image = decode_jpeg(data)
    except RuntimeError:
        return load_image(path, size)
    height, width = image.shape[-2:]
    new_width, new_height = resized_size(width, height, size)
    if (new_width, new_height) != (width, height):
        image = resize(image, [new_height, new_width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    left, top = center_box(new_width, new_height, size)
    return image[:, top:top + size, left:left + size].contiguous()


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """A (3, H, W) uint8 image as JPEG bytes, without chroma subsampling (4:4:4) so the colour
    that PCA noise works on survives re-encoding."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(
        buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
