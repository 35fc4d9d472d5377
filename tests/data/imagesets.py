"""Tiny image sets for the data tests, and their fixtures.

Test modules import the fixtures they use from here (``from imagesets import folder_root,
private_cache``): a conftest.py in this folder would shadow tests/conftest.py, which other
test modules import as ``conftest``.
"""

import numpy as np
import pytest
from PIL import Image


def smooth_image(width, height, seed):
    """Smooth random RGB content (survives JPEG well) as a uint8 (H, W, 3) array."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def write_image(path, width=300, height=260, seed=0, fmt="JPEG", mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(smooth_image(width, height, seed))
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


#: (width, height) of the tiny set's images: landscape, portrait, square, already 256.
SIZES = [(300, 260), (260, 340), (256, 256), (410, 290)]


def make_folder_dataset(root, classes=("cat", "dog", "eel"), train=4, val=2):
    """root/train/<class>/img<i>.jpg and root/val/..., every image different, some PNG."""
    seed = 0
    for split, count in (("train", train), ("val", val)):
        for name in classes:
            for i in range(count):
                width, height = SIZES[(seed + i) % len(SIZES)]
                fmt = "PNG" if seed % 5 == 4 else "JPEG"
                write_image(root / split / name / f"img{i}.{'png' if fmt == 'PNG' else 'jpg'}", width, height, seed, fmt)
                seed += 1
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Nothing the data tests do touches ~/.cache/alexnet."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def folder_root(tmp_path):
    return make_folder_dataset(tmp_path / "tiny")
