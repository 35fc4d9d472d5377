"""measure_loader_paths: every path measured in one call, on the same images."""

import pytest

from alexnet.experiments.bench.loaders import PATHS, format_throughput, measure_loader_paths
from alexnet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


@pytest.mark.parametrize("augment_device", [None, "cpu"])
def test_every_path_is_measured_side_by_side(folder_root, tmp_path, augment_device):
    results = measure_loader_paths(folder_root, batch_size=4, workers=0, batches=2, augment_device=augment_device)
    assert [row["path"] for row in results] == list(PATHS)
    for row in results:
        assert set(row) >= {"path", "images_per_second", "workers", "batch_size", "images", "seconds", "note"}
        assert row["images_per_cpu_second"] > 0
        assert row["images"] == 8 and row["images_per_second"] > 0 and row["workers"] == 0
    assert ("train_crops on cpu" in results[0]["note"]) == (augment_device == "cpu")
    assert len(list((tmp_path / "cache" / "packed").iterdir())) == 2  # the raw and jpeg copies
    table = format_throughput(results)
    assert table.count("\n") == len(PATHS) and "packed-raw" in table


def test_a_packed_root_measures_its_own_format_only(folder_root, tmp_path):
    from alexnet.data import prepare
    prepare(folder_root, tmp_path / "p", workers=0)
    results = measure_loader_paths(tmp_path / "p", batch_size=4, batches=1)
    measured = {row["path"]: row["images_per_second"] for row in results}
    assert measured["packed-raw"] > 0
    assert measured["folder-pil"] is None and measured["packed-jpeg"] is None


def test_unknown_paths_and_too_few_images(folder_root):
    with pytest.raises(ConfigError, match="unknown loader path"):
        measure_loader_paths(folder_root, paths=("folder-opencv",))
    with pytest.raises(ConfigError, match="need more than warmup=1"):
        measure_loader_paths(folder_root, batch_size=12, paths=("folder-pil",))
