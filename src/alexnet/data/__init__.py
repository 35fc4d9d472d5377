"""The paper's data pipeline (§2, §4.1): datasets, statistics, loaders and augmentation.

    from alexnet.data import resolve_data_root, open_dataset, load_or_compute_stats, make_loader
    from alexnet.data.transforms import train_crops, centre_crops, ten_crops

    root = resolve_data_root(None)                  # the built-in dataset (or a folder / packed path)
    train = open_dataset(root, "train")             # items: uint8 (3, 256, 256), label
    stats = load_or_compute_stats(root).to(device)  # mean image, RGB covariance and its PCA
    for images, labels in make_loader(train, 128, shuffle=True, seed=0, epoch=epoch):
        x = train_crops(images.to(device), stats, generator)   # float32 (128, 3, 224, 224)

See docs/data.md.
"""

from ..files import cache_dir
from .folders import FolderDataset
from .images import IMAGE_SIZE
from .loader import Loader, default_workers, make_loader
from .packed import PackedDataset, prepare
from .roots import load_or_compute_stats, open_dataset, resolve_data_root
from .stats import DatasetStats, compute_stats
from .synthetic import builtin_root, generate_builtin

__all__ = [
    "IMAGE_SIZE", "DatasetStats", "FolderDataset", "Loader", "PackedDataset", "builtin_root", "cache_dir",
    "compute_stats", "default_workers", "generate_builtin", "load_or_compute_stats", "make_loader",
    "open_dataset", "prepare", "resolve_data_root",
]
