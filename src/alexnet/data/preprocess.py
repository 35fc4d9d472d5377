"""The network's input from a loader's batch: the one step between the loader and the model.

    loader -> uint8 (B, 3, 256, 256) -> Preprocess.train / .centre / .ten -> crops -> the model

``Preprocess`` holds what a run decided once (its dataset statistics, the mean and colour-noise
conventions, the memory format) and applies ``alexnet.data.transforms`` on the batch's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .stats import DatasetStats
from .transforms import PCA_STD, center_crops, ten_crops, train_crops


@dataclass
class Preprocess:
    """uint8 (B, 3, 256, 256) batches on the model's device -> the network's input.

    ``divide_std`` divides by the per-channel pixel std as most ports do (not the paper's
    input, kept for the trainability experiment); ``channels_last`` sets the memory format.
    """

    stats: DatasetStats  # on the model's device
    mean: str = "image"
    divide_std: bool = False
    channels_last: bool = False
    pca: Optional[str] = None  # None: alexnet.data.transforms' default convention
    pca_std: float = PCA_STD

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.divide_std:
            std = self.stats.covariance.diagonal().sqrt().to(x)
            x = x / std.view(*([1] * (x.dim() - 3)), 3, 1, 1)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train(self, images: torch.Tensor, generator: torch.Generator,
              slice_of: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Random crops, flips and colour noise: float (B, 3, 224, 224). ``slice_of``: the
        images are one replica's share of a global batch (``transforms.train_crops``)."""
        kwargs = {"mean": self.mean, "pca_std": self.pca_std, "slice_of": slice_of}
        if self.pca is not None:
            kwargs["pca"] = self.pca
        return self._finish(train_crops(images, self.stats, generator, **kwargs))

    def centre(self, images: torch.Tensor) -> torch.Tensor:
        """The centre crop: float (B, 3, 224, 224)."""
        return self._finish(center_crops(images, self.stats, mean=self.mean))

    def ten(self, images: torch.Tensor) -> torch.Tensor:
        """The paper's ten patches: float (B, 10, 3, 224, 224)."""
        return self._finish(ten_crops(images, self.stats, mean=self.mean))
