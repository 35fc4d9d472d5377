"""Class-folder datasets: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``.

ImageNet's layout (``n01440764``-style folder names) or any names. Classes are the sorted
folder names, and their order is the label order. Every non-hidden file in a class folder is
an image; one that cannot be read is a ``DataError`` naming it when it is read (or skipped,
and counted, by a loader over a dataset opened with ``skip_bad=True``). Entries that cannot
even be told to be files (symlink loops, broken symlinks, entries this user may not stat)
count as images too, so they fail, or are skipped, in the same way; a split's entry of that
kind, which may have been a class folder, is a ``DataError`` (with ``skip_bad``: left out,
its message in ``FolderDataset.skipped_entries``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .images import DECODERS, IMAGE_SIZE, SHORTER_SIDE, check_resize, load_image, load_image_torchvision, unreadable

SPLITS = ("train", "val")
LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def _visible(folder: Path) -> List[os.DirEntry]:
    """The folder's non-hidden entries in name order; a folder that cannot be listed is one line."""
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({error.strerror or error})") from None


def _is_image_entry(entry: os.DirEntry) -> bool:
    """A file, or an entry that might be one but cannot be looked at (a symlink loop, a broken
    symlink, one this user may not stat): those stay in the list so that reading them is the
    DataError naming them, which ``skip_bad`` skips and counts like any other bad image."""
    try:
        return entry.is_file() or (entry.is_symlink() and not entry.is_dir())
    except OSError:  # is_file() follows the link: a loop raises ELOOP here
        return True


def _is_class_folder(entry: os.DirEntry) -> Optional[bool]:
    """Whether a split's entry is a class folder; None when it cannot be told (a symlink loop, a
    broken symlink: perhaps a class folder whose target is gone)."""
    try:
        if entry.is_dir():
            return True
        return None if entry.is_symlink() and not entry.is_file() else False
    except OSError:
        return None


def class_names(root: Union[str, Path], split: str, skipped: Optional[List[str]] = None) -> List[str]:
    """The sorted class-folder names of ``root/split``; a missing or empty split is an error.
    An entry that may have been a class folder but cannot be read is a DataError naming it,
    or, given a list ``skipped`` (``skip_bad``), left out with its message appended there."""
    folder = Path(root) / check_split(split)
    if not folder.is_dir():
        raise DataError(f"{folder}: no {split}/ folder (a folder dataset is {LAYOUT})")
    classes = subfolder_names(folder, skipped)
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {split}/<class>/<image>)")
    return classes


def subfolder_names(folder: Union[str, Path], skipped: Optional[List[str]] = None) -> List[str]:
    """The folder's class folders (its non-hidden subfolders) in name order; an entry that may
    have been one but cannot be read is a DataError, or appended to ``skipped``."""
    classes = []
    for entry in _visible(Path(folder)):
        kind = _is_class_folder(entry)
        if kind is None:
            message = unreadable(entry.path, "a class folder")
            if skipped is None:
                raise DataError(message)
            skipped.append(message)
        elif kind:
            classes.append(entry.name)
    return classes


def image_entries(folder: Union[str, Path]) -> List[str]:
    """The paths of the folder's image files (every non-hidden file), in name order."""
    return [e.path for e in _visible(Path(folder)) if _is_image_entry(e)]


def list_images(root: Union[str, Path], split: str, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, label) of every image of a split, class by class, files in name order."""
    return class_images(Path(root) / split, classes)


def class_images(folder: Union[str, Path], classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, label) of every image in ``folder``'s class folders ``classes`` (label: the
    position in ``classes``), class by class, files in name order."""
    samples = []
    for label, name in enumerate(classes):
        files = image_entries(Path(folder) / name)
        if not files:
            raise DataError(f"{Path(folder) / name}: empty class folder (no image files)")
        samples.extend((path, label) for path in files)
    return samples


def check_same_classes(root: Union[str, Path], val_classes: Sequence[str], train_classes: Sequence[str]):
    """Validation labels mean something only if val has train's classes, in train's order."""
    if list(val_classes) == list(train_classes):
        return
    parts = []
    for kind, names in (("missing", set(train_classes) - set(val_classes)),
                        ("extra", set(val_classes) - set(train_classes))):
        if names:
            names = sorted(names)
            parts.append(f"{kind} {', '.join(names[:5])}" + (" ..." if len(names) > 5 else ""))
    raise DataError(f"{Path(root) / 'val'}: val classes differ from train's ({'; '.join(parts)})")


class FolderDataset(Dataset):
    """Images from class folders, each as a uint8 tensor (3, 256, 256): shorter side to 256,
    centre crop, RGB (``resize="warp"``: the whole image warped to 256x256, as Caffe's were).
    ``decoder`` "pil" (the reference) or "torchvision" (libjpeg-turbo)."""

    def __init__(self, root: Union[str, Path], split: str, skip_bad: bool = False, decoder: str = "pil",
                 resize: str = SHORTER_SIDE):
        if decoder not in DECODERS:
            raise DataError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        self.root = Path(root)
        self.split = check_split(split)
        self.skip_bad = skip_bad
        self.decoder = decoder
        self.resize = check_resize(resize)
        self.image_size = IMAGE_SIZE
        # unreadable entries of the split left out with skip_bad (messages), for the reports
        self.skipped_entries: List[str] = []
        skipped = self.skipped_entries if skip_bad else None
        self.classes = class_names(self.root, split, skipped)
        if split == "val":
            check_same_classes(self.root, self.classes, class_names(self.root, "train", [] if skip_bad else None))
        self.samples = list_images(self.root, split, self.classes)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        load = load_image if self.decoder == "pil" else load_image_torchvision
        return load(path, self.image_size, self.resize), label

    def __repr__(self) -> str:
        resize = "" if self.resize == SHORTER_SIDE else f", resize={self.resize}"
        return (f"FolderDataset({str(self.root)!r}, {self.split!r}: {len(self)} images, "
                f"{len(self.classes)} classes, decoder={self.decoder}{resize})")


def is_folder_dataset(root: Union[str, Path]) -> bool:
    root = Path(root)
    return (root / "train").is_dir() or (root / "val").is_dir()
