"""The network's input from a loader's batch: the one step between the loader and the model.

    loader -> uint8 (B, 3, 256, 256) -> Preprocess.augment / .centre / .ten -> crops -> the model

``PreprocessConfig`` is what a run decides about its input (the mean subtracted, the colour
noise, dividing by the pixel std, the crop size, how a file becomes the 256×256 image); a run
folder and every checkpoint record it, so evaluation and prediction preprocess as training
did (an imported Caffe checkpoint records Caffe's: ``resize="warp"``, ``crop=227``). ``Preprocess`` applies it with the run's dataset
statistics and memory format, through ``alexnet.data.transforms``, on the batch's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from ..model.spec import CROP, INPUT_SIZES
from ..settings import Settings
from .images import RESIZES, SHORTER_SIDE
from .stats import DatasetStats
from .transforms import DEFAULT_PCA, MEANS, PCA_CONVENTIONS, PCA_STD, centre_crops, ten_crops, train_crops


@dataclass(frozen=True)
class PreprocessConfig(Settings):
    """How a loader's batch becomes the network's input (§2, §4.1).

    mean:       what is subtracted (``transforms.MEANS``): "image", the 256x256 mean image under
                each crop's window (the paper's words; default); "centre"; "channel"; "none".
    pca:        the colour noise's convention (``transforms.PCA_CONVENTIONS``), training only.
    pca_std:    the std of its α (the paper: 0.1; 0 turns it off).
    divide_std: also divide by the per-channel pixel std, as most ports do (not the paper).
    crop_chunk: draw one crop position and flip per this many consecutive images of a batch
                (cuda-convnet's data provider: 32; the paper's words: 1, every image its own).
    resize:     how an image file becomes the 256x256 image (``images.RESIZES``): "shorter-side",
                the paper's (the shorter side to 256, then the centre; default, and what a
                checkpoint without this setting had); "warp", Caffe's (both sides to 256, the
                aspect ratio not kept). Honoured where evaluation and prediction read files;
                a packed dataset holds shorter-side images only.
    crop:       the side of the crops: 224, the paper's (the net reads it as a 227 input with
                3 zero rows and columns); 227, Caffe's.
    """

    what = "preprocessing setting"

    mean: str = "image"
    pca: str = DEFAULT_PCA
    pca_std: float = PCA_STD
    divide_std: bool = False
    crop_chunk: int = 1
    resize: str = SHORTER_SIDE
    crop: int = CROP

    def checks(self):
        return [
            (self.mean in MEANS, f"--mean must be one of {', '.join(MEANS)}; got {self.mean!r}"),
            (self.pca in PCA_CONVENTIONS, f"--pca must be one of {', '.join(PCA_CONVENTIONS)}; got {self.pca!r}"),
            (0 <= self.pca_std < float("inf"), f"--pca-std must be a finite, non-negative number; got {self.pca_std}"),
            (isinstance(self.divide_std, bool), f"divide_std must be True or False; got {self.divide_std!r}"),
            (isinstance(self.crop_chunk, int) and self.crop_chunk >= 1,
             f"--crop-chunk must be a positive integer; got {self.crop_chunk!r}"),
            (self.resize in RESIZES, f"resize must be one of {', '.join(RESIZES)}; got {self.resize!r}"),
            (type(self.crop) is int and self.crop in INPUT_SIZES,
             f"crop must be {' or '.join(map(str, INPUT_SIZES))}; got {self.crop!r}"),
        ]


@dataclass
class Preprocess:
    """uint8 (B, 3, 256, 256) batches on the model's device -> the network's input, as
    ``config`` says; ``channels_last`` sets the memory format."""

    stats: DatasetStats  # on the model's device
    config: PreprocessConfig = field(default_factory=PreprocessConfig)
    channels_last: bool = False

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.divide_std:
            std = self.stats.covariance.diagonal().sqrt().to(x)
            x = x / std.view(*([1] * (x.dim() - 3)), 3, 1, 1)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def augment(self, images: torch.Tensor, generator: torch.Generator,
              slice_of: Optional[Tuple[int, int]] = None, colour: bool = True) -> torch.Tensor:
        """Random crops, flips and colour noise: float (B, 3, crop, crop). ``slice_of``: the
        images are one replica's share of a global batch (``transforms.train_crops``);
        ``colour=False``: no colour noise (its draws are still made, so the stream stays the same)."""
        c = self.config
        return self._finish(train_crops(images, self.stats, generator, mean=c.mean, pca=c.pca,
                                        pca_std=c.pca_std if colour else 0.0, slice_of=slice_of,
                                        chunk=c.crop_chunk, crop=c.crop))

    def centre(self, images: torch.Tensor) -> torch.Tensor:
        """The centre crop: float (B, 3, crop, crop)."""
        return self._finish(centre_crops(images, self.stats, mean=self.config.mean, crop=self.config.crop))

    def ten(self, images: torch.Tensor) -> torch.Tensor:
        """The paper's ten patches (with 227 crops, Caffe's oversampling): float (B, 10, 3, crop, crop)."""
        return self._finish(ten_crops(images, self.stats, mean=self.config.mean, crop=self.config.crop))
