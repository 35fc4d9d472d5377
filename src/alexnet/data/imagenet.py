"""ILSVRC-2012's 1000 classes: their names, and how their folders are named.

The names are torchvision's list (the same order as Caffe's synsets: the synset ids sorted),
read from its metadata, so nothing is downloaded. ImageNet's class folders are the synset ids
(``n01440764``), and sorted they are in that same order.
"""

from __future__ import annotations

import re
from typing import Sequence, Tuple

from torchvision.models import AlexNet_Weights

ILSVRC_NAMES: Tuple[str, ...] = tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
#: An ILSVRC synset id, as ImageNet's class folders are named.
WNID = re.compile(r"n\d{8}")


def are_ilsvrc_synsets(names: Sequence[str], folders: Sequence[str]) -> bool:
    """Whether ``names`` are the 1000 ILSVRC class names and ``folders`` ImageNet's synset
    folders in their sorted order: the same classes, in the same order."""
    folders = list(folders)
    return (tuple(names) == ILSVRC_NAMES and len(folders) == len(ILSVRC_NAMES) and folders == sorted(folders)
            and all(WNID.fullmatch(folder) for folder in folders))
