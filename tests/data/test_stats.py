"""The training set's mean image and RGB covariance (§2, §4.1) against numpy."""

import json

import numpy as np
import pytest
import torch
from helpers import write_image

import alexnet.data.roots as roots_module
from alexnet.data import DatasetStats, compute_stats, load_or_compute_stats, open_dataset
from alexnet.data.images import load_image
from alexnet.errors import DataError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


class Images(torch.utils.data.Dataset):
    """In-memory uint8 images, for statistics with known answers."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


def numpy_stats(images):
    """The direct computation: float64 numpy over every pixel of every image."""
    x = np.stack([np.asarray(image, dtype=np.float64) for image in images])  # (N, 3, H, W)
    pixels = x.transpose(1, 0, 2, 3).reshape(3, -1)
    covariance = np.cov(pixels, bias=True)
    return x.mean(axis=0), pixels.mean(axis=1), covariance


def check_against_numpy(stats, images):
    mean_image, channel_mean, covariance = numpy_stats(images)
    assert stats.mean_image.dtype == torch.float32 and stats.mean_image.shape == (3, 256, 256)
    assert np.allclose(stats.mean_image.numpy(), mean_image, atol=1e-4)
    assert np.allclose(stats.channel_mean.numpy(), channel_mean, atol=1e-4)
    assert np.allclose(stats.covariance.numpy(), covariance, rtol=1e-5, atol=1e-3)
    values = np.linalg.eigvalsh(covariance)[::-1]
    assert np.allclose(stats.eigenvalues.numpy(), values, rtol=1e-5)
    vectors = stats.eigenvectors.double().numpy()
    assert np.allclose(covariance @ vectors, vectors * values, rtol=1e-4, atol=1e-2)  # Σ p_i = λ_i p_i
    assert np.allclose(vectors.T @ vectors, np.eye(3), atol=1e-5)
    assert stats.count == len(images)


def test_random_images_against_numpy():
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=generator) for _ in range(5)]
    # correlated channels, so the covariance is not diagonal
    images = [torch.stack([im[0], (im[0] // 2 + im[1] // 2), im[2] // 3]) for im in images]
    stats = compute_stats(Images(images), workers=0)
    check_against_numpy(stats, images)


def test_folder_dataset_against_numpy_any_worker_count(folder_root):
    dataset = open_dataset(folder_root, "train")
    images = [load_image(path) for path, _ in dataset.samples]
    serial = compute_stats(dataset, workers=0)
    check_against_numpy(serial, images)
    parallel = compute_stats(dataset, workers=2)
    assert torch.equal(serial.mean_image, parallel.mean_image)  # exact integer sums: order does not matter
    assert torch.equal(serial.covariance, parallel.covariance)


def test_save_load_round_trip_and_readable_json(tmp_path):
    generator = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=generator) for _ in range(3)]
    stats = compute_stats(Images(images), workers=0)
    stats.save(tmp_path / "s")
    saved = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert saved["images"] == 3 and len(saved["channel_mean"]) == 3 and len(saved["eigenvalues"]) == 3
    assert np.load(tmp_path / "s" / "mean_image.npy").dtype == np.float32
    loaded = DatasetStats.load(tmp_path / "s")
    assert torch.equal(loaded.mean_image, stats.mean_image)
    # Exactly: a run must not depend on whether its statistics were just computed or loaded
    # (the colour noise follows the eigenvectors, and a 1e-7 difference changes a run).
    for name in ("channel_mean", "covariance", "eigenvalues", "eigenvectors"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name)), name
    assert loaded.path == tmp_path / "s"
    summary = loaded.summary()
    assert json.loads(json.dumps(summary)) == summary  # plain JSON, no tensors
    assert (tmp_path / "s" / summary["mean_image"]).is_file()  # names the saved mean image
    moved = loaded.to("meta")
    assert moved.mean_image.device.type == "meta" and loaded.mean_image.device.type == "cpu"


def test_unreadable_statistics_are_named(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "stats.json").write_text("{not json")
    with pytest.raises(DataError, match=f"{tmp_path / 's'}: unreadable dataset statistics"):
        DatasetStats.load(tmp_path / "s")


def test_load_or_compute_saves_beside_the_data_then_loads(folder_root, monkeypatch):
    first = load_or_compute_stats(folder_root, workers=0)
    assert first.path == folder_root.resolve() / "alexnet-stats"
    assert (first.path / "stats.json").is_file() and (first.path / "mean_image.npy").is_file()

    def no_pass(*args, **kwargs):
        raise AssertionError("statistics were recomputed")
    monkeypatch.setattr(roots_module, "compute_stats", no_pass)
    second = load_or_compute_stats(folder_root)
    assert torch.equal(second.mean_image, first.mean_image)
    # the split changed: an image more means the saved statistics are stale
    write_image(folder_root / "train" / "cat" / "new.jpg", 300, 300, seed=99)
    with pytest.raises(AssertionError, match="recomputed"):
        load_or_compute_stats(folder_root)


def test_read_only_data_gets_its_statistics_in_the_cache(folder_root, tmp_path, monkeypatch):
    monkeypatch.setattr(roots_module, "is_writable_dir", lambda folder: False)
    stats = load_or_compute_stats(folder_root, workers=0)
    assert stats.path.parent == tmp_path / "cache" / "stats"
    assert not (folder_root / "alexnet-stats").exists()
    assert load_or_compute_stats(folder_root).path == stats.path
