"""Images that are not a dataset's split: a flat folder of image files (no labels), or one folder
of class folders (``<class>/<image>``, labelled by the sorted folder names, as a split is), read
the way the folder datasets read theirs (``images.load_image``). ``open_images`` takes any of
them, or a dataset (a folder dataset or a packed one) and a split: what ``alexnet features``
reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .folders import LAYOUT, FolderDataset, class_images, image_entries, is_folder_dataset, subfolder_names
from .images import IMAGE_SIZE, SHORTER_SIDE, check_resize, load_image
from .packed import PackedDataset, packed_state
from .roots import open_dataset

#: The label of an image whose folder names no class.
UNLABELLED = -1

#: What ``open_images`` reads, for messages.
KINDS = (f"a folder of images, a folder of class folders (<class>/<image>), a folder dataset ({LAYOUT}) "
         f"or a packed dataset")


class ImageFiles(Dataset):
    """Image files as (uint8 (3, 256, 256), label) items, in the given order: labels and class
    names where the folders give them (else every label is ``UNLABELLED`` and ``classes`` is
    None). ``resize``: how a file becomes the 256x256 image (``images.RESIZES``)."""

    def __init__(self, paths: Sequence[str], labels: Optional[Sequence[int]] = None,
                 classes: Optional[Sequence[str]] = None, resize: str = SHORTER_SIDE):
        self.paths = [str(p) for p in paths]
        self.labels = torch.tensor(list(labels) if labels is not None else [UNLABELLED] * len(self.paths),
                                   dtype=torch.int64)
        self.classes = list(classes) if classes is not None else None
        self.resize = check_resize(resize)
        self.image_size = IMAGE_SIZE

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return load_image(self.paths[index], self.image_size, self.resize), int(self.labels[index])

    def __repr__(self) -> str:
        classes = f", {len(self.classes)} classes" if self.classes is not None else ", unlabelled"
        return f"ImageFiles({len(self)} images{classes})"


def class_folders(folder: Union[str, Path], resize: str = SHORTER_SIDE) -> ImageFiles:
    """``folder/<class>/<image>``: every class folder's images, class by class in name order."""
    folder = Path(folder)
    classes = subfolder_names(folder)
    if not classes:
        raise DataError(f"{folder}: no class folders (expected <class>/<image>)")
    samples = class_images(folder, classes)
    return ImageFiles([path for path, _ in samples], [label for _, label in samples], classes, resize)


def flat_folder(folder: Union[str, Path], resize: str = SHORTER_SIDE) -> ImageFiles:
    """Every non-hidden file of ``folder``, in name order, without labels."""
    folder = Path(folder)
    paths = image_entries(folder)
    if not paths:
        raise DataError(f"{folder}: no image files")
    return ImageFiles(paths, resize=resize)


def open_images(data: Union[str, Path], split: str = "val", resize: str = SHORTER_SIDE) -> Dataset:
    """The images at ``data``: a packed or a folder dataset (its ``split``), a folder of class
    folders, or a flat folder of images. A folder holding both image files and folders is one
    line: which of them are the images is not for us to guess."""
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (give {KINDS})")
    if packed_state(root) is not None or is_folder_dataset(root):
        return open_dataset(root, split, resize=resize)
    folders, files = subfolder_names(root, skipped=[]), image_entries(root)  # unreadable entries: told when read
    if folders and files:
        raise DataError(f"{root}: holds both image files ({Path(files[0]).name}, ...) and folders ({folders[0]}, ...); "
                        f"give a folder of images, or a folder of class folders")
    return class_folders(root, resize) if folders else flat_folder(root, resize)


def image_paths(dataset: Dataset) -> List[str]:
    """Where each item of ``dataset`` came from: its file, or for a packed dataset
    ``ROOT/SPLIT#INDEX`` (prepare keeps the images, not their file names)."""
    if isinstance(dataset, ImageFiles):
        return list(dataset.paths)
    if isinstance(dataset, FolderDataset):
        return [path for path, _ in dataset.samples]
    if isinstance(dataset, PackedDataset):
        return [f"{dataset.root / dataset.split}#{i}" for i in range(len(dataset))]
    raise DataError(f"{dataset!r}: not a dataset whose images have paths")
