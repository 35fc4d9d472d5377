"""What ``--data`` points at: a folder dataset, a packed dataset, or (nothing) the built-in one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from torch.utils.data import Dataset

from ..errors import DataError
from .folders import LAYOUT, FolderDataset, check_split, is_folder_dataset
from .packed import PackedDataset, packed_state, read_meta


def resolve_data_root(data: Optional[Union[str, Path]]) -> Path:
    """The dataset root for ``data``: None is the built-in dataset (generated into the cache on
    first use); a path must be a folder dataset or a finished packed dataset."""
    if data is None:
        from .synthetic import builtin_root
        return builtin_root()
    root = Path(data).expanduser()
    if not root.exists():
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


def open_dataset(root: Union[str, Path], split: str, skip_bad: bool = False) -> Dataset:
    """The split's reader, chosen by what ``root`` is: ``PackedDataset`` or ``FolderDataset``.
    Items are (uint8 (3, 256, 256), label); ``.classes`` is the label order."""
    check_split(split)
    root = resolve_data_root(root)
    if packed_state(root) is not None:
        return PackedDataset(root, split, skip_bad=skip_bad)
    return FolderDataset(root, split, skip_bad=skip_bad)
