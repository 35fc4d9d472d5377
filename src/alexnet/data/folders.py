"""Class-folder datasets: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``.

ImageNet's layout (``n01440764``-style folder names) or any names. Classes are the sorted
folder names, and their order is the label order. Every non-hidden file in a class folder is
an image; one that cannot be read is a ``DataError`` naming it when it is read (or skipped,
and counted, by a loader over a dataset opened with ``skip_bad=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .images import DECODERS, IMAGE_SIZE, load_image, load_image_torchvision

SPLITS = ("train", "val")
LAYOUT = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def _visible(entries) -> List[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def class_names(root: Union[str, Path], split: str) -> List[str]:
    """The sorted class-folder names of ``root/split``; a missing or empty split is an error."""
    folder = Path(root) / check_split(split)
    if not folder.is_dir():
        raise DataError(f"{folder}: no {split}/ folder (a folder dataset is {LAYOUT})")
    with os.scandir(folder) as entries:
        classes = [e.name for e in _visible(entries) if e.is_dir()]
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {split}/<class>/<image>)")
    return classes


def list_images(root: Union[str, Path], split: str, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, label) of every image, class by class, files in name order."""
    samples = []
    for label, name in enumerate(classes):
        folder = Path(root) / split / name
        with os.scandir(folder) as entries:
            files = [e.path for e in _visible(entries) if e.is_file()]
        if not files:
            raise DataError(f"{folder}: empty class folder (no image files)")
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
    centre crop, RGB. ``decoder`` "pil" (the reference) or "torchvision" (libjpeg-turbo)."""

    def __init__(self, root: Union[str, Path], split: str, skip_bad: bool = False, decoder: str = "pil"):
        if decoder not in DECODERS:
            raise DataError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        self.root = Path(root)
        self.split = check_split(split)
        self.skip_bad = skip_bad
        self.decoder = decoder
        self.image_size = IMAGE_SIZE
        self.classes = class_names(self.root, split)
        if split == "val":
            check_same_classes(self.root, self.classes, class_names(self.root, "train"))
        self.samples = list_images(self.root, split, self.classes)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        load = load_image if self.decoder == "pil" else load_image_torchvision
        return load(path, self.image_size), label

    def __repr__(self) -> str:
        return (f"FolderDataset({str(self.root)!r}, {self.split!r}: {len(self)} images, "
                f"{len(self.classes)} classes, decoder={self.decoder})")


def is_folder_dataset(root: Union[str, Path]) -> bool:
    root = Path(root)
    return (root / "train").is_dir() or (root / "val").is_dir()
