"""The built-in dataset: deterministic, atomic, read through the folder path, and learnable."""

import numpy as np
import pytest

from PIL import Image

import alexnet.data.synthetic as synthetic
from alexnet.data import open_dataset, resolve_data_root
from alexnet.data.synthetic import CLASSES, MARKER, generate_builtin

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def small(root, **kwargs):
    return generate_builtin(root, train_per_class=3, val_per_class=2, workers=0, **kwargs)


def test_layout_sizes_and_reading(tmp_path):
    root = small(tmp_path / "b")
    assert (root / MARKER).is_file()
    train, val = open_dataset(root, "train"), open_dataset(root, "val")
    assert train.classes == sorted(CLASSES) and len(CLASSES) == 10
    assert len(train) == 30 and len(val) == 20
    for path, _ in train.samples:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert 256 <= min(image.size) <= 320 and max(image.size) <= 1.5 * min(image.size) + 1
    image, label = train[0]
    assert image.shape == (3, 256, 256)


def test_generation_is_deterministic_and_idempotent(tmp_path):
    a, b = small(tmp_path / "a"), small(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    other = generate_builtin(tmp_path / "c", seed=1, train_per_class=3, val_per_class=2, workers=0)
    assert (a / files[0]).read_bytes() != (other / files[0]).read_bytes()
    stamp = (a / files[0]).stat().st_mtime_ns
    assert small(tmp_path / "a") == a and (a / files[0]).stat().st_mtime_ns == stamp  # already there: untouched


def test_an_interrupted_generation_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    calls = []

    def dies(job):
        calls.append(job)
        if len(calls) == 7:
            raise KeyboardInterrupt
        original(job)
    original = synthetic._write_one
    monkeypatch.setattr(synthetic, "_write_one", dies)
    with pytest.raises(KeyboardInterrupt):
        small(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder
    monkeypatch.setattr(synthetic, "_write_one", original)
    assert (small(tmp_path / "b") / MARKER).is_file()


def test_no_data_means_the_builtin_dataset_in_the_versioned_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "TRAIN_PER_CLASS", 2)
    monkeypatch.setattr(synthetic, "VAL_PER_CLASS", 1)
    root = resolve_data_root(None)
    assert root == tmp_path / "cache" / f"builtin-v{synthetic.VERSION}"
    assert len(open_dataset(None, "train")) == 20 and len(open_dataset(None, "val")) == 10


def test_the_classes_are_separable_by_simple_features(tmp_path):
    """A sanity check that the concepts are learnable: even the nearest class-mean colour of
    the saturated pixels is far above chance (10%) on held-out images. (Colour alone is not
    enough, by design: a fifth of the images take any hue, so only the shapes always tell.)"""
    root = generate_builtin(tmp_path / "b", train_per_class=8, val_per_class=4, workers=0)

    def features(split):
        dataset = open_dataset(root, split)
        x = np.stack([dataset[i][0][:, 16:240, 16:240].float().numpy() for i in range(len(dataset))])
        bright = x.max(axis=1, keepdims=True) - x.min(axis=1, keepdims=True) > 60  # saturated: the object
        colour = (x * bright).sum(axis=(2, 3)) / np.maximum(bright.sum(axis=(2, 3)), 1)
        return colour / np.linalg.norm(colour, axis=1, keepdims=True), dataset.labels.numpy()
    train_x, train_y = features("train")
    val_x, val_y = features("val")
    centroids = np.stack([train_x[train_y == k].mean(axis=0) for k in range(10)])
    predicted = np.argmin(((val_x[:, None] - centroids[None]) ** 2).sum(axis=2), axis=1)
    assert (predicted == val_y).mean() > 0.3
