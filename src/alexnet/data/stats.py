"""The training set's statistics (§2, §4.1): the mean image and the RGB covariance's PCA.

One streaming pass over the training split's 256×256 images adds up, in exact integer
arithmetic (so the result does not depend on batch size, order or worker count):

- the 256×256×3 sum of images (the mean image cuda-convnet subtracts);
- per channel, the sum of pixel values and the 3×3 sum of products over every pixel.

The covariance is over all pixels of all images, on the 0-255 scale, divided by the number
of pixels (not n - 1). Its eigenvectors p_i and eigenvalues λ_i (largest first) drive the
paper's colour noise (``alexnet.data.transforms``).

Saved as ``stats.json`` (everything but the mean image, readable) and ``mean_image.npy``
(float32 (3, 256, 256)); ``alexnet.data.roots.load_or_compute_stats`` keeps them beside the
data in ``alexnet-stats/``, or in the cache when the data folder is read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..files import write_json
from ..progress import SILENT, Reporter
from .images import IMAGE_SIZE
from .loader import make_loader
from .storage import save_npy

STATS_FOLDER = "alexnet-stats"
STATS_JSON = "stats.json"
MEAN_IMAGE = "mean_image.npy"
BATCH_SIZE = 64


class StatsAccumulator:
    """Exact running sums over uint8 images (B, 3, S, S); ``result()`` gives ``DatasetStats``."""

    def __init__(self, size: int = IMAGE_SIZE):
        self.image_sum = np.zeros((3, size, size), dtype=np.int64)  # Σ over images, per pixel
        self.outer_sum = np.zeros((3, 3), dtype=np.int64)  # Σ over all pixels of x xᵀ
        self.count = 0

    def add(self, images: torch.Tensor):
        pixels = images.cpu().numpy()
        self.image_sum += pixels.sum(axis=0, dtype=np.int64)
        for image in pixels:
            rgb = image.reshape(3, -1).astype(np.int64)  # (3, S·S)
            self.outer_sum += rgb @ rgb.T
        self.count += len(pixels)

    def state(self) -> Dict[str, np.ndarray]:
        return {"image_sum": self.image_sum, "outer_sum": self.outer_sum, "count": np.int64(self.count)}

    def load_state(self, state):
        self.image_sum = np.array(state["image_sum"], dtype=np.int64)
        self.outer_sum = np.array(state["outer_sum"], dtype=np.int64)
        self.count = int(state["count"])

    def result(self, dataset_size: Optional[int] = None) -> "DatasetStats":
        if self.count == 0:
            raise DataError("no readable training images: cannot compute the dataset statistics")
        pixels = self.count * self.image_sum[0].size
        mean_image = self.image_sum / self.count  # float64 (3, S, S)
        channel_mean = self.image_sum.sum(axis=(1, 2)) / pixels
        covariance = self.outer_sum / pixels - np.outer(channel_mean, channel_mean)
        return DatasetStats.from_arrays(mean_image, channel_mean, covariance, self.count,
                                        self.count if dataset_size is None else dataset_size)


def principal_components(covariance: np.ndarray):
    """Eigenvalues (largest first) and unit eigenvectors (columns), each with its largest
    component positive so the same covariance always gives the same signs."""
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(3)])
    return np.clip(values, 0.0, None), vectors * signs


def _floats(tensor: torch.Tensor):
    """Exact: every float32 value is a float64 that JSON writes and reads back unchanged."""
    return tensor.double().cpu().numpy().tolist()


@dataclass(eq=False)  # tensors: compare the fields you mean with torch.equal
class DatasetStats:
    """Statistics of a training split on the 0-255 scale. ``eigenvectors[:, i]`` goes with
    ``eigenvalues[i]`` (variances, largest first). ``count``: images averaged;
    ``dataset_size``: ``len`` of the split they came from (to notice a changed dataset);
    ``path``: the folder they were saved to or loaded from."""

    mean_image: torch.Tensor  # float32 (3, 256, 256)
    channel_mean: torch.Tensor  # float32 (3,) R, G, B
    covariance: torch.Tensor  # float32 (3, 3)
    eigenvalues: torch.Tensor  # float32 (3,)
    eigenvectors: torch.Tensor  # float32 (3, 3), columns
    count: int
    dataset_size: Optional[int] = None
    path: Optional[Path] = field(default=None, compare=False)

    @classmethod
    def from_arrays(cls, mean_image, channel_mean, covariance, count: int, dataset_size=None) -> "DatasetStats":
        # The PCA of the covariance as it is kept (float32), so statistics just computed and
        # the same statistics loaded from stats.json give the same eigenvectors, bit for bit.
        covariance = np.asarray(covariance, dtype=np.float32).astype(np.float64)
        values, vectors = principal_components(covariance)

        def tensor(array):
            return torch.as_tensor(np.asarray(array), dtype=torch.float32)
        return cls(tensor(mean_image), tensor(channel_mean), tensor(covariance), tensor(values), tensor(vectors),
                   int(count), dataset_size)

    def to(self, device) -> "DatasetStats":
        return replace(self, **{name: getattr(self, name).to(device) for name in
                                ("mean_image", "channel_mean", "covariance", "eigenvalues", "eigenvectors")})

    def summary(self) -> dict:
        """Everything but the mean image, as plain numbers (what ``stats.json`` holds)."""
        return {
            "images": self.count,
            "dataset_size": self.dataset_size,
            "scale": "RGB pixel values 0-255, 256x256 centre crops",
            "channel_mean": _floats(self.channel_mean),
            "covariance": _floats(self.covariance),
            "eigenvalues": _floats(self.eigenvalues),
            "eigenvalue_sqrt": _floats(self.eigenvalues.clamp(min=0).sqrt()),
            "eigenvectors_as_columns": _floats(self.eigenvectors),
            "mean_image": MEAN_IMAGE,
            "path": str(self.path) if self.path is not None else None,
        }

    def describe(self) -> str:
        """A few lines for people: the means, the eigenvalues, where the files are."""
        skipped = (self.dataset_size or self.count) - self.count
        values = self.eigenvalues.tolist()
        lines = [f"statistics of {self.count} training images" + (f" ({skipped} unreadable skipped)" if skipped else "")
                 + ", RGB on the 0-255 scale, 256x256 centre crops",
                 "  channel mean   " + "  ".join(f"{c} {m:.2f}" for c, m in zip("RGB", self.channel_mean.tolist())),
                 "  eigenvalues    " + "  ".join(f"{v:.1f}" for v in values)
                 + "   (square roots " + "  ".join(f"{max(v, 0) ** 0.5:.2f}" for v in values) + ")"]
        if self.path is not None:
            lines.append(f"  saved in       {self.path}")
        return "\n".join(lines)

    def save(self, folder: Union[str, Path]) -> Path:
        """``folder/mean_image.npy``, then ``folder/stats.json`` (both atomic; the JSON last)."""
        folder = Path(folder)
        save_npy(folder / MEAN_IMAGE, self.mean_image.detach().cpu().numpy().astype(np.float32))
        self.path = folder
        write_json(folder / STATS_JSON, self.summary())
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "DatasetStats":
        folder = Path(folder)
        try:
            saved = json.loads((folder / STATS_JSON).read_text())
            mean_image = np.load(folder / MEAN_IMAGE)
            if mean_image.shape != (3, IMAGE_SIZE, IMAGE_SIZE) or np.asarray(saved["covariance"]).shape != (3, 3):
                raise ValueError(f"mean image {mean_image.shape}, expected (3, {IMAGE_SIZE}, {IMAGE_SIZE})")
            stats = cls.from_arrays(mean_image, saved["channel_mean"], saved["covariance"], saved["images"],
                                    saved.get("dataset_size"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{folder}: unreadable dataset statistics ({error}); "
                            f"delete the folder and run alexnet stats again") from None
        stats.path = folder
        return stats


def compute_stats(dataset: Dataset, workers: Optional[int] = None, reporter: Reporter = SILENT) -> DatasetStats:
    """One streaming pass over ``dataset`` (uint8 (3, 256, 256) items). A dataset opened with
    ``skip_bad=True`` leaves unreadable images out."""
    loader = make_loader(dataset, BATCH_SIZE, shuffle=False, workers=workers)
    accumulator = StatsAccumulator(getattr(dataset, "image_size", IMAGE_SIZE))
    with reporter.bar(len(dataset), "statistics", unit="img") as bar:
        for images, _ in loader:
            accumulator.add(images)
            bar.update(loader.consumed - bar.n)
    return accumulator.result(dataset_size=len(dataset))
