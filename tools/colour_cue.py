"""How much colour alone tells the built-in dataset's classes apart (docs/data.md).

Each class of the built-in dataset has its own hue family, but its background, lighting and a
fifth of its images' hues vary, so a net has to learn the shapes. This measures how far colour
alone goes, with two nearest-class-mean classifiers fitted on the training images and scored on
the validation images, each image read as the net reads it (shorter side 256, centre 256×256):

- the image's mean RGB;
- its colour histogram, 4 levels a channel (64 bins), as fractions of its pixels.

    python tools/colour_cue.py

reads (and on first use generates) the built-in dataset in the cache (``$ALEXNET_CACHE``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet.data.images import load_image_array
from alexnet.data.synthetic import builtin_root


def colour_features(root: Path, split: str):
    """(mean RGB (N, 3), 64-bin colour histogram (N, 64), class names (N,)) of a split."""
    paths = sorted(Path(root, split).glob("*/*"))
    means, histograms = [], []
    for path in paths:
        pixels = load_image_array(path).reshape(3, -1)
        means.append(pixels.mean(1))
        level = (pixels // 64).astype(np.int64)  # 0-3 in each channel
        histograms.append(np.bincount(level[0] * 16 + level[1] * 4 + level[2], minlength=64) / pixels.shape[1])
    return np.stack(means), np.stack(histograms), np.array([path.parent.name for path in paths])


def nearest_class_mean(train: np.ndarray, train_labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's class: the class whose training mean is nearest (Euclidean)."""
    classes = np.unique(train_labels)
    centres = np.stack([train[train_labels == c].mean(0) for c in classes])
    return classes[((queries[:, None] - centres[None]) ** 2).sum(-1).argmin(1)]


def main() -> None:
    root = builtin_root()
    train_mean, train_hist, train_labels = colour_features(root, "train")
    val_mean, val_hist, val_labels = colour_features(root, "val")
    chance = 100 / len(np.unique(train_labels))
    for name, train, val in (("mean RGB", train_mean, val_mean), ("4x4x4 colour histogram", train_hist, val_hist)):
        right = 100 * (nearest_class_mean(train, train_labels, val) == val_labels).mean()
        print(f"{root.name}, {name}, nearest class mean: {right:.1f}% of {len(val_labels)} validation images "
              f"right (chance {chance:.0f}%)")


if __name__ == "__main__":
    main()
