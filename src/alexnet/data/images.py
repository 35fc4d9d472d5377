"""One image file to the paper's 256×256 RGB input (§2): shorter side to 256, centre crop.

Or, with ``resize="warp"`` (``RESIZES``), Caffe's: the whole image resized to 256×256, its
aspect ratio not kept, nothing cut away (how Caffe's ImageNet files were made, and so what
its trained nets were evaluated on). Every reader (folders with PIL, folders with
torchvision's JPEG decoder, ``prepare``) goes through ``resized_size`` and ``center_box`` so
they cut the same window. Any file that cannot
be read becomes a ``DataError`` naming it, on one line.

Very large images are read, not taken for decompression bombs: PIL's own guard (it refuses
images over about 179 M pixels) is set aside for our reads, which allow ``MAX_PIXELS``
instead, and a JPEG over ``DRAFT_PIXELS`` is decoded at a reduced scale, since it is resized
to 256 anyway.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
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

#: How a file becomes the 256×256 image: "shorter-side", the paper's (the shorter side to 256,
#: the aspect ratio kept, then the central 256×256); "warp", Caffe's (both sides to 256).
SHORTER_SIDE = "shorter-side"
WARP = "warp"
RESIZES = (SHORTER_SIDE, WARP)
#: What each resize does, in words, for messages.
RESIZE_WORDS = {SHORTER_SIDE: "with the shorter side resized to 256 and the centre 256x256 cut out",
                WARP: "warped to 256x256 (the aspect ratio not kept)"}

#: The first bytes of the common formats: a file that starts like one but cannot be opened is
#: a damaged image, not some other kind of file.
SIGNATURES = {"JPEG": b"\xff\xd8", "PNG": b"\x89PNG", "GIF": b"GIF8", "BMP": b"BM", "WEBP": b"RIFF"}


#: The most pixels (width × height) an image we read may have: 1e9 is a 31,623² square, 3 GB
#: as RGB once decoded (a JPEG, decoded at 1/8 scale, takes 1/64 of that). PIL's own limit,
#: twice ``Image.MAX_IMAGE_PIXELS`` (about 179 M), guards against decompression bombs in
#: untrusted files and would turn valid large scans into errors; a dataset is the user's own
#: files, so our reads allow this much instead, and say so when an image is over it.
MAX_PIXELS = 1_000_000_000

#: A JPEG with more pixels than this (PIL's default ``Image.MAX_IMAGE_PIXELS``, where PIL
#: starts warning) is decoded at 1/2, 1/4 or 1/8 scale (PIL's draft mode: the decoder's DCT
#: scaling), never below the size it is resized to, instead of in full only for the resize to
#: throw most of it away. Every image below it decodes exactly as it always did.
DRAFT_PIXELS = 89_478_485

_pil_limit_lock = threading.Lock()
_pil_limit_state = {"readers": 0, "saved": None}


@contextlib.contextmanager
def _our_pixel_limit():
    """PIL's decompression-bomb check off while our reads open and decode (``MAX_PIXELS`` is
    checked instead). PIL keeps its limit in a module global: it is set aside while any of our
    reads is in progress (threads included) and put back by the last one to finish."""
    with _pil_limit_lock:
        if _pil_limit_state["readers"] == 0:
            _pil_limit_state["saved"] = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_limit_state["readers"] += 1
    try:
        yield
    finally:
        with _pil_limit_lock:
            _pil_limit_state["readers"] -= 1
            if _pil_limit_state["readers"] == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_state["saved"]


def check_resize(resize: str) -> str:
    if resize not in RESIZES:
        raise DataError(f"resize must be one of {', '.join(RESIZES)}; got {resize!r}")
    return resize


def resized_size(width: int, height: int, size: int = IMAGE_SIZE, resize: str = SHORTER_SIDE) -> Tuple[int, int]:
    """(width, height) with the shorter side ``size`` and the aspect ratio kept; the longer side
    is truncated as torchvision's ``Resize(size)`` does, so both decoders agree. With
    ``resize="warp"``: (size, size), whatever the aspect ratio."""
    if check_resize(resize) == WARP:
        return size, size
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


def _open_pil(data: bytes, path: Union[str, Path]) -> Image.Image:
    """The file's bytes opened by PIL (only the header is read), or the DataError saying why not."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # PIL raises UnidentifiedImageError, but also others for odd headers
        kind = next((name for name, magic in SIGNATURES.items() if data.startswith(magic)), None)
        if kind:
            raise DataError(f"{path}: truncated or corrupt {kind} image (its header is unreadable)") from None
        raise DataError(f"{path}: not an image file (PIL cannot identify its format)") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DataError(f"{path}: too large to read ({width}x{height} = {width * height:,} pixels; "
                        f"the limit is {MAX_PIXELS:,}); shrink it or remove it (--skip-bad skips it)")
    return image


def _decode(data: bytes, path: Union[str, Path], size: Optional[int], resize: str = SHORTER_SIDE):
    """(the RGB image, fully decoded (a truncated file fails here); the file's own (width,
    height); the box of the image that covers the whole file, None if it is the image). With
    ``size`` (what it will be resized to, as ``resize`` says), a JPEG over ``DRAFT_PIXELS``
    comes at reduced scale."""
    with _our_pixel_limit():
        image = _open_pil(data, path)
        full, box = image.size, None
        if size is not None and full[0] * full[1] > DRAFT_PIXELS:
            drafted = image.draft(None, resized_size(*full, size, resize))  # None: not a JPEG
            box = drafted[1] if drafted else None
        try:
            image.load()
            return to_rgb(image), full, box
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            kind = f"{image.format} image" if image.format else "image"
            raise DataError(f"{path}: truncated or corrupt {kind} ({reason})") from None


def load_image_array(path: Union[str, Path], size: int = IMAGE_SIZE, resize: str = SHORTER_SIDE) -> np.ndarray:
    """The preprocessed image as a uint8 array (3, size, size), with PIL's bilinear resize:
    the shorter side to ``size`` and the centre window, or (``resize="warp"``) the whole image."""
    image, full, box = _decode(read_bytes(path), path, size, resize)
    width, height = resized_size(*full, size, resize)  # from the file's size: a drafted image cuts the same window
    if (width, height) != image.size:
        image = image.resize((width, height), Image.BILINEAR, box=box)
    left, top = center_box(width, height, size)
    pixels = np.asarray(image.crop((left, top, left + size, top + size)))  # (size, size, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _is_large(data: bytes) -> bool:
    """Whether the image is over ``DRAFT_PIXELS`` or ``MAX_PIXELS`` (from its header alone)."""
    try:
        with _our_pixel_limit():
            width, height = Image.open(io.BytesIO(data)).size
    except Exception:  # PIL cannot read the header: torchvision tries, as before, then the PIL way
        return False
    return width * height > min(DRAFT_PIXELS, MAX_PIXELS)


def load_image(path: Union[str, Path], size: int = IMAGE_SIZE, resize: str = SHORTER_SIDE) -> torch.Tensor:
    """PIL path: a uint8 tensor (3, size, size)."""
    return torch.from_numpy(load_image_array(path, size, resize))


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


def load_image_torchvision(path: Union[str, Path], size: int = IMAGE_SIZE,
                           resize: str = SHORTER_SIDE) -> torch.Tensor:
    """torchvision path: libjpeg-turbo decoding and an antialiased bilinear resize on tensors.
    Anything but a plain JPEG (PNG, alpha, CMYK, a broken file, one over ``DRAFT_PIXELS``)
    goes the PIL way, so odd files are converted and bad ones named exactly as there."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize as resize_tensor

    data = read_bytes(path)
    if data[:2] != b"\xff\xd8" or _is_large(data):  # a huge JPEG: the PIL way decodes it scaled down
        return load_image(path, size, resize)
    try:
        image = decode_jpeg(data)
    except RuntimeError:
        return load_image(path, size, resize)
    height, width = image.shape[-2:]
    new_width, new_height = resized_size(width, height, size, resize)
    if (new_width, new_height) != (width, height):
        image = resize_tensor(image, [new_height, new_width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    left, top = center_box(new_width, new_height, size)
    return image[:, top:top + size, left:left + size].contiguous()


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """A (3, H, W) uint8 image as JPEG bytes, without chroma subsampling (4:4:4) so the colour
    that PCA noise works on survives re-encoding."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(
        buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
