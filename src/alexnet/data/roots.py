"""What ``--data`` points at (a folder dataset, a packed dataset, or, given nothing, the
built-in one), its splits, and its training set's statistics, computed once and kept."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional, Union

from torch.utils.data import Dataset

from ..errors import DataError
from ..files import cache_entry, is_writable_dir
from ..progress import SILENT, Reporter
from .folders import LAYOUT, FolderDataset, check_split, is_folder_dataset
from .images import RESIZE_WORDS, SHORTER_SIDE, check_resize
from .packed import PackedDataset, packed_state, read_meta
from .stats import STATS_FOLDER, STATS_JSON, DatasetStats, compute_stats
from .storage import writing
from .synthetic import builtin_root


def resolve_data_root(data: Optional[Union[str, Path]], reporter: Reporter = SILENT) -> Path:
    """The dataset root for ``data``: None is the built-in dataset (generated into the cache on
    first use); a path must be a folder dataset or a finished packed dataset."""
    if data is None:
        return builtin_root(reporter)
    root = Path(data).expanduser()
    if not root.exists():
        if root.is_symlink():  # a link whose target is gone, or that loops back on itself
            try:
                root.resolve(strict=True)
            except (OSError, RuntimeError) as error:
                loops = "loop" in str(error).lower() or getattr(error, "errno", None) == errno.ELOOP
                what = "a symbolic link that loops back on itself" if loops else "a symbolic link to nothing"
                raise DataError(f"{root}: {what}") from None
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (a dataset is {LAYOUT}, or a packed dataset from alexnet prepare)")
    if packed_state(root) is not None:
        read_meta(root)  # a half-written one is an error that says to re-run prepare
        return root
    if not is_folder_dataset(root):
        raise DataError(f"{root}: not a dataset (expected {LAYOUT}, or a packed dataset from alexnet prepare)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: missing (a folder dataset is {LAYOUT})")
    return root


def open_dataset(root: Union[str, Path], split: str, skip_bad: bool = False, resize: str = SHORTER_SIDE) -> Dataset:
    """The split's reader, chosen by what ``root`` is: ``PackedDataset`` or ``FolderDataset``.
    Items are (uint8 (3, 256, 256), label); ``.classes`` is the label order. ``resize``: how
    the files become those images (``images.RESIZES``); a packed dataset holds them made one
    way, and asked for another it is one line saying to read the folder dataset instead."""
    check_split(split)
    check_resize(resize)
    root = resolve_data_root(root)
    if packed_state(root) is not None:
        meta = read_meta(root)
        packed_as = meta.get("resize", SHORTER_SIDE)  # prepare writes the paper's images
        if resize != packed_as:
            raise DataError(f"{root}: a packed dataset holds its images {RESIZE_WORDS[packed_as]}, but this "
                            f"preprocessing reads them {RESIZE_WORDS[resize]} (resize {resize!r}); evaluate on "
                            f"the folder dataset it was packed from (--data {meta.get('source', 'SRC')})")
        return PackedDataset(root, split, skip_bad=skip_bad)
    return FolderDataset(root, split, skip_bad=skip_bad, resize=resize)


def stats_folders(root: Union[str, Path]):
    """Where the statistics of the dataset at ``root`` live: beside it, or (read-only data) in
    the cache under a name derived from its absolute path."""
    root = Path(root).resolve()
    return root / STATS_FOLDER, cache_entry("stats", root)


#: What to do when the statistics cannot be written: the disk is full; the folder is read-only.
STATS_FULL = "free space and run it again"
STATS_DENIED = ("make it writable, or set ALEXNET_CACHE to a writable folder "
                "(the statistics of a read-only dataset are kept there)")


def save_stats_for(root: Union[str, Path], stats: DatasetStats) -> Path:
    """Save beside the data if its folder is writable, else in the cache; returns the folder.
    A full disk or a read-only folder is one DataError line naming it."""
    beside, cached = stats_folders(root)
    folder = beside if is_writable_dir(Path(root)) else cached
    with writing(folder, STATS_FULL, STATS_DENIED):
        return stats.save(folder)


def load_or_compute_stats(root, workers: Optional[int] = None, reporter: Reporter = SILENT,
                          skip_bad: bool = False) -> DatasetStats:
    """The saved statistics of ``root``'s training split, or computed now in one pass and saved
    (``stats.path`` says where). Saved ones are reused only if the split still has as many
    images as when they were computed."""
    root = resolve_data_root(root, reporter)
    dataset = open_dataset(root, "train", skip_bad=skip_bad)
    for folder in stats_folders(root):
        if (folder / STATS_JSON).is_file():
            stats = DatasetStats.load(folder)
            if stats.dataset_size == len(dataset):
                return stats
    stats = compute_stats(dataset, workers=workers, reporter=reporter)
    save_stats_for(root, stats)
    return stats
