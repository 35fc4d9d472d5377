"""The paper's augmentation and test-time crops (§4.1, FACTS §3), on batches, on any device.

The loader hands over uint8 batches (B, 3, 256, 256); the training loop moves them to its
device and calls these, which return float32 crops on the 0-255 scale minus the mean:

- ``train_crops``: a random 224×224 window (33×33 positions), a random horizontal flip, the
  mean subtracted, and fancy-PCA colour noise (``pca_lighting``);
- ``centre_crops``: the central window;
- ``ten_crops``: the four corners and the centre, then the same five mirrored.

Every crop is one ``torch.gather`` over the whole batch (``crop_windows``): no Python loop
over images. ``mean="image"`` subtracts the 256×256×3 mean image under the same window and
flip as the image (the paper's "mean activity ... from each pixel"); ``mean="centre"`` the
mean image's centre 224×224 window from every crop after cropping and flipping, as the
authors' code does (cuda-convnet's ``data_mean_crop``); ``mean="channel"`` the three
per-channel means; ``mean="none"`` nothing. Every image gets its own crop position and flip,
as the paper says; ``train_crops(chunk=32)`` draws them per chunk of 32 images, as the
authors' code does (the ``authors`` preset's ``crop_chunk``).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ..errors import DataError
from ..model.spec import CROP
from .images import IMAGE_SIZE

#: What is subtracted from a crop: "image": the mean image under the crop's own window and
#: flip (the paper's words: "subtracting the mean activity over the training set from each
#: pixel"); "centre": the mean image's centre window from every crop, after cropping and
#: flipping (cuda-convnet's data_mean_crop); "channel": the three channel means; "none".
MEANS = ("image", "centre", "channel", "none")

#: Fancy-PCA scale per principal component, with α_i ~ N(0, 0.1) (FACTS §3):
#: "sqrt-lambda": α_i·√λ_i — the authors' code (cuda-convnet, cuda-convnet2); λ_i are the
#:     variances of 0-255 pixel values, so √λ_i are standard deviations in pixel units.
#: "lambda": α_i·λ_i with λ_i of pixel values scaled to [0, 1] (the paper's formula as
#:     fb.resnet.torch's Lighting transform applies it), i.e. α_i·λ_i/255 on our 0-255 scale.
#: "none": no colour noise.
PCA_CONVENTIONS = ("sqrt-lambda", "lambda", "none")
DEFAULT_PCA = "sqrt-lambda"
PCA_STD = 0.1

#: ``ten_crops`` order (``ten_crop_windows`` gives the pixel offsets): index 4 is the centre
#: crop, index 5 + k mirrors index k (torchvision's TenCrop order).
TEN_CROP_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right", "center",
                  "top-left mirrored", "top-right mirrored", "bottom-left mirrored",
                  "bottom-right mirrored", "center mirrored")


def _check(images: torch.Tensor, crop: int, mean: str):
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise DataError(f"expected a uint8 batch (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}); "
                        f"got {images.dtype} {tuple(images.shape)}")
    if not 1 <= crop <= images.shape[-1]:
        raise DataError(f"crop must be between 1 and the image size {images.shape[-1]}; got {crop}")
    if mean not in MEANS:
        raise DataError(f"mean must be one of {', '.join(MEANS)}; got {mean!r}")


def _check_pca(pca: str):
    if pca not in PCA_CONVENTIONS:
        raise DataError(f"pca must be one of {', '.join(PCA_CONVENTIONS)}; got {pca!r}")


def crop_windows(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                 crop: int = CROP) -> torch.Tensor:
    """``images[b, :, top[b]:top[b]+crop, left[b]:left[b]+crop]``, mirrored left-right where
    ``flip[b]``, for the whole batch in one gather. (B, C, S, S) -> (B, C, crop, crop), same dtype."""
    batch, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    steps = torch.arange(crop, device=images.device)
    rows = top.view(-1, 1) + steps  # (B, crop)
    cols = torch.where(flip.view(-1, 1), left.view(-1, 1) + (crop - 1) - steps, left.view(-1, 1) + steps)
    flat = (rows.view(-1, crop, 1) * size + cols.view(-1, 1, crop)).view(batch, 1, crop * crop)
    windows = images.reshape(batch, channels, size * size).gather(2, flat.expand(batch, channels, crop * crop))
    return windows.view(batch, channels, crop, crop)


def _centered(images, stats, mean: str, top, left, flip, crop: int) -> torch.Tensor:
    """Float32 windows minus the mean (see ``MEANS``): the mean image under the same window
    and flip, its centre window, the channel means, or nothing. In place: on a CPU every fresh batch-sized buffer costs page faults."""
    windows = crop_windows(images, top, left, flip, crop).float()  # (B, 3, crop, crop)
    if mean == "channel":
        windows.sub_(stats.channel_mean.to(images.device, torch.float32).view(1, 3, 1, 1))
    elif mean == "image":
        mean_image = stats.mean_image.to(images.device, torch.float32)
        if mean_image.shape != images.shape[1:]:
            raise DataError(f"the mean image is {tuple(mean_image.shape)} but the images are {tuple(images.shape[1:])}")
        windows.sub_(crop_windows(mean_image.expand(len(images), -1, -1, -1), top, left, flip, crop))
    elif mean == "centre":
        mean_image = stats.mean_image.to(images.device, torch.float32)
        margin = (mean_image.shape[-1] - crop) // 2
        windows.sub_(mean_image[:, margin:margin + crop, margin:margin + crop])
    return windows


def pca_scale(eigenvalues: torch.Tensor, pca: str) -> torch.Tensor:
    """Per component, what α_i multiplies (before the eigenvector): √λ_i, λ_i/255 or 0."""
    _check_pca(pca)
    eigenvalues = eigenvalues.float().clamp(min=0)
    if pca == "sqrt-lambda":
        return eigenvalues.sqrt()
    if pca == "lambda":
        return eigenvalues / 255.0
    return torch.zeros_like(eigenvalues)


def pca_lighting(batch: int, stats, pca: str = DEFAULT_PCA, pca_std: float = PCA_STD,
                 generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Fancy PCA (§4.1): per image the RGB offset Σ_i α_i·scale_i·p_i, α_i ~ N(0, pca_std),
    as (B, 3, 1, 1) to add to every pixel. ``scale`` follows ``pca`` (``PCA_CONVENTIONS``)."""
    scale = pca_scale(stats.eigenvalues.to(device), pca)  # (3,)
    alpha = torch.randn(batch, 3, generator=generator, device=device) * pca_std  # (B, 3)
    offsets = (alpha * scale) @ stats.eigenvectors.to(device, torch.float32).T  # (B, 3): Σ_i α_i s_i p_i
    return offsets.view(batch, 3, 1, 1)


def train_crops(images: torch.Tensor, stats, generator: Optional[torch.Generator] = None, *, mean: str = "image",
                pca: str = DEFAULT_PCA, pca_std: float = PCA_STD, flip: bool = True, crop: int = CROP,
                slice_of: Optional[Tuple[int, int]] = None, chunk: int = 1) -> torch.Tensor:
    """The paper's training input: (B, 3, 256, 256) uint8 -> (B, 3, crop, crop) float32.

    Per image: a random window (``256 - crop + 1`` positions each way), a horizontal flip
    with probability 1/2, the mean subtracted, and one colour offset added to every pixel.
    All randomness comes from ``generator`` (on the images' device), drawn in this order:
    rows, columns, flips, α.

    ``slice_of=(start, total)``: the images are positions ``start..start+B-1`` of a batch of
    ``total`` (one replica's share of a global batch): the draws are made for all ``total``
    images, as one process would make them, and this slice of them is used.
    ``chunk``: one window and flip for each run of ``chunk`` consecutive images of the batch
    (cuda-convnet draws them per 32); the colour offset stays per image.
    """
    _check(images, crop, mean)
    _check_pca(pca)
    batch, device, positions = images.shape[0], images.device, images.shape[-1] - crop + 1
    start, total = (0, batch) if slice_of is None else slice_of
    if not 0 <= start <= total - batch:
        raise ValueError(f"slice_of={slice_of}: {batch} images do not fit at {start} in a batch of {total}")
    mine = slice(start, start + batch)
    draws = -(-total // chunk)  # one per chunk, the last one possibly short

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return (values.repeat_interleave(chunk)[:total] if chunk > 1 else values)[mine]

    top = per_image(torch.randint(0, positions, (draws,), generator=generator, device=device))
    left = per_image(torch.randint(0, positions, (draws,), generator=generator, device=device))
    mirror = per_image(torch.rand(draws, generator=generator, device=device) < 0.5)
    if not flip:
        mirror = torch.zeros_like(mirror)
    crops = _centered(images, stats, mean, top, left, mirror, crop)
    if pca != "none":
        crops.add_(pca_lighting(total, stats, pca, pca_std, generator, device)[mine])
    return crops


def ten_crop_windows(size: int = IMAGE_SIZE, crop: int = CROP) -> List[Tuple[int, int, bool]]:
    """(top, left, mirrored) of each of the ten crops, in ``TEN_CROP_NAMES`` order."""
    margin = size - crop
    corners_and_center = ((0, 0), (0, margin), (margin, 0), (margin, margin), (margin // 2, margin // 2))
    return [(top, left, mirrored) for mirrored in (False, True) for top, left in corners_and_center]


def _fixed_window(images: torch.Tensor, stats, mean: str, window: Tuple[int, int, bool], crop: int) -> torch.Tensor:
    """The same window of every image, minus the mean."""
    top, left, mirrored = (torch.full((images.shape[0],), value, device=images.device) for value in window)
    return _centered(images, stats, mean, top, left, mirrored, crop)


def centre_crops(images: torch.Tensor, stats, *, mean: str = "image", crop: int = CROP) -> torch.Tensor:
    """The central window minus the mean: (B, 3, 256, 256) uint8 -> (B, 3, crop, crop) float32."""
    _check(images, crop, mean)
    return _fixed_window(images, stats, mean, ten_crop_windows(images.shape[-1], crop)[4], crop)


def ten_crops(images: torch.Tensor, stats, *, mean: str = "image", crop: int = CROP) -> torch.Tensor:
    """The paper's ten test patches (§4.1): (B, 3, 256, 256) uint8 -> (B, 10, 3, crop, crop)
    float32, in ``TEN_CROP_NAMES`` order (top-left, top-right, bottom-left, bottom-right,
    centre, then the same mirrored), for averaging the softmax over dim 1."""
    _check(images, crop, mean)
    windows = ten_crop_windows(images.shape[-1], crop)
    return torch.stack([_fixed_window(images, stats, mean, window, crop) for window in windows], dim=1)
