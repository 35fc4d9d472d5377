"""The packed format: identical tensors to the folder reader, statistics in the same pass,
resumable, atomic, and never opened half-written."""

import errno
import json
import os
import re

import numpy as np
import pytest
import torch

import alexnet.data.packed as packed_module
import alexnet.data.storage as storage_module
from alexnet.data import PackedDataset, compute_stats, make_loader, open_dataset, prepare, resolve_data_root
from alexnet.data.stats import DatasetStats
from alexnet.data.transforms import train_crops
from alexnet.errors import DataError, StorageError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def same_items(a, b):
    assert len(a) == len(b) and a.classes == b.classes
    for i in range(len(a)):
        (x, label_x), (y, label_y) = a[i], b[i]
        assert label_x == label_y and torch.equal(x, y), i


@pytest.mark.parametrize("workers", [0, 2])
def test_raw_holds_exactly_what_the_folder_reader_gives(folder_root, tmp_path, workers):
    meta = prepare(folder_root, tmp_path / "p", workers=workers)
    assert meta["splits"]["train"]["images"] == 12 and meta["splits"]["val"]["images"] == 6
    assert meta["classes"] == ["cat", "dog", "eel"]
    for split in ("train", "val"):
        dataset = open_dataset(tmp_path / "p", split)
        assert isinstance(dataset, PackedDataset) and dataset.format == "raw"
        same_items(dataset, open_dataset(folder_root, split))
    assert (tmp_path / "p" / "train.u8").stat().st_size == 12 * 3 * 256 * 256
    assert not (tmp_path / "p" / ".prepare").exists()


def test_statistics_come_from_the_same_pass(folder_root, tmp_path):
    prepare(folder_root, tmp_path / "p", workers=0)
    packed = DatasetStats.load(tmp_path / "p" / "alexnet-stats")
    direct = compute_stats(open_dataset(folder_root, "train"), workers=0)
    assert torch.equal(packed.mean_image, direct.mean_image)
    assert torch.allclose(packed.covariance, direct.covariance, rtol=1e-5)
    assert packed.count == 12


def test_folder_and_packed_loaders_give_identical_batches_and_crops(folder_root, tmp_path):
    prepare(folder_root, tmp_path / "p")
    stats = compute_stats(open_dataset(folder_root, "train"), workers=0)
    batches = []
    for root in (folder_root, tmp_path / "p"):
        loader = make_loader(open_dataset(root, "train"), 5, shuffle=True, seed=4, epoch=1, workers=0)
        generator = torch.Generator().manual_seed(0)
        batches.append([(images, labels, train_crops(images, stats, generator)) for images, labels in loader])
    for (a, la, ca), (b, lb, cb) in zip(*batches):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ca, cb)


def test_jpeg_is_close_to_the_folder_reader(folder_root, tmp_path):
    meta = prepare(folder_root, tmp_path / "j", format="jpeg", quality=95, workers=0)
    assert meta["format"] == "jpeg" and meta["quality"] == 95
    packed, folder = open_dataset(tmp_path / "j", "val"), open_dataset(folder_root, "val")
    assert packed.format == "jpeg" and len(packed) == 6
    for i in range(len(packed)):
        (x, lx), (y, ly) = packed[i], folder[i]
        assert lx == ly and x.shape == (3, 256, 256) and x.dtype == torch.uint8
        assert (x.float() - y.float()).abs().mean() < 1.5
    offsets = np.load(tmp_path / "j" / "val.offsets.npy")
    assert offsets[0] == 0 and offsets[-1] == (tmp_path / "j" / "val.jpg").stat().st_size


def test_a_finished_dataset_is_not_overwritten_unless_asked(folder_root, tmp_path):
    prepare(folder_root, tmp_path / "p", workers=0)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'p'}: already a finished packed dataset; pass --overwrite")):
        prepare(folder_root, tmp_path / "p", workers=0)
    meta = prepare(folder_root, tmp_path / "p", format="jpeg", workers=0, overwrite=True)
    assert meta["format"] == "jpeg" and not (tmp_path / "p" / "train.u8").exists()


def test_a_folder_with_other_files_is_refused(folder_root, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match="exists, is not empty and is not a packed dataset"):
        prepare(folder_root, tmp_path / "p", workers=0)
    with pytest.raises(DataError, match="not a folder dataset"):
        prepare(tmp_path / "p", tmp_path / "q", workers=0)


@pytest.mark.parametrize("inside", ["train/packed", "packed"])
def test_a_destination_inside_the_source_is_refused_before_anything_is_written(folder_root, inside):
    dst = folder_root / inside
    with pytest.raises(DataError) as error:
        prepare(folder_root, dst, workers=0)
    assert str(error.value) == f"{dst}: inside the source dataset {folder_root}; choose a destination outside it"
    assert not dst.exists() and open_dataset(folder_root, "train").classes == ["cat", "dog", "eel"]


def test_a_destination_around_the_source_is_refused(folder_root, tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path}: holds the source dataset {folder_root}; choose"):
        prepare(folder_root, tmp_path, workers=0)
    assert not (tmp_path / ".prepare").exists()


def _bad_image(folder_root):
    bad = folder_root / "train" / "dog" / "img2.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    return bad, good


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_stopped_by_a_bad_image_then_resumed_equals_one_clean_run(folder_root, tmp_path, fmt):
    clean = prepare(folder_root, tmp_path / "clean", format=fmt, workers=0, batch_size=2)
    bad, good = _bad_image(folder_root)
    with pytest.raises(DataError) as error:
        prepare(folder_root, tmp_path / "p", format=fmt, workers=0, batch_size=2)
    assert str(error.value).startswith(f"{bad}: truncated or corrupt JPEG image")
    # half-written: never opened as a dataset, and the message says what to do
    for call in (lambda: resolve_data_root(tmp_path / "p"), lambda: open_dataset(tmp_path / "p", "train"),
                 lambda: PackedDataset(tmp_path / "p", "val")):
        with pytest.raises(DataError, match="half-written packed dataset .* re-run alexnet prepare"):
            call()
    state = np.load(tmp_path / "p" / ".prepare" / "train.state.npz")
    assert int(state["done"]) == 6  # cat's 4 images and dog's first 2, in whole batches of 2
    bad.write_bytes(good)  # fixed: the next run continues from there
    resumed = prepare(folder_root, tmp_path / "p", format=fmt, workers=0, batch_size=2)
    assert resumed["splits"] == clean["splits"]
    for split in ("train", "val"):
        same_items(open_dataset(tmp_path / "p", split), open_dataset(tmp_path / "clean", split))
    assert torch.equal(DatasetStats.load(tmp_path / "p" / "alexnet-stats").mean_image,
                       DatasetStats.load(tmp_path / "clean" / "alexnet-stats").mean_image)


def test_after_a_bad_image_remove_it_or_skip_it_and_go_on(folder_root, tmp_path):
    bad, _ = _bad_image(folder_root)
    for dst in ("removed", "skipped"):
        with pytest.raises(DataError):
            prepare(folder_root, tmp_path / dst, workers=0, batch_size=2)
    bad.unlink()
    removed = prepare(folder_root, tmp_path / "removed", workers=0, batch_size=2)
    assert removed["splits"]["train"]["images"] == 11 and removed["splits"]["train"]["skipped"] == 0
    same_items(open_dataset(tmp_path / "removed", "train"), open_dataset(folder_root, "train"))
    bad.write_bytes(b"broken")  # back, still bad: this one goes on with --skip-bad
    skipped = prepare(folder_root, tmp_path / "skipped", workers=0, batch_size=2, skip_bad=True)
    assert skipped["splits"]["train"]["images"] == 11 and skipped["splits"]["train"]["skipped"] == 1
    same_items(open_dataset(tmp_path / "skipped", "train"), open_dataset(tmp_path / "removed", "train"))


def test_files_changed_before_the_point_reached_are_noticed(folder_root, tmp_path):
    bad, _ = _bad_image(folder_root)
    with pytest.raises(DataError):
        prepare(folder_root, tmp_path / "p", workers=0, batch_size=2)
    (folder_root / "train" / "cat" / "img0.jpg").unlink()  # already packed: the order shifts
    with pytest.raises(DataError, match="its files changed since prepare stopped; pass --overwrite"):
        prepare(folder_root, tmp_path / "p", workers=0, batch_size=2, skip_bad=True)


def test_ctrl_c_then_rerun_continues_where_it_stopped(folder_root, tmp_path, monkeypatch):
    clean = prepare(folder_root, tmp_path / "clean", workers=0, batch_size=4)
    calls = []
    original = packed_module._SplitWriter.add

    def interrupted(self, *args, **kwargs):
        calls.append(self.split)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    monkeypatch.setattr(packed_module._SplitWriter, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(folder_root, tmp_path / "p", workers=0, batch_size=4)
    monkeypatch.setattr(packed_module._SplitWriter, "add", original)
    assert int(np.load(tmp_path / "p" / ".prepare" / "train.state.npz")["done"]) == 4
    prepare(folder_root, tmp_path / "p", workers=0, batch_size=4)
    for split in ("train", "val"):
        same_items(open_dataset(tmp_path / "p", split), open_dataset(tmp_path / "clean", split))
    assert json.loads((tmp_path / "p" / "packed.json").read_text())["splits"] == clean["splits"]


def test_an_unfinished_job_of_another_kind_is_not_mixed_in(folder_root, tmp_path):
    _bad_image(folder_root)
    with pytest.raises(DataError):
        prepare(folder_root, tmp_path / "p", workers=0)
    with pytest.raises(DataError, match="unfinished prepare of a different source, format or quality; pass --overwrite"):
        prepare(folder_root, tmp_path / "p", format="jpeg", workers=0)


def test_skip_bad_leaves_unreadable_images_out_and_reports_them(folder_root, tmp_path):
    bad, _ = _bad_image(folder_root)
    (folder_root / "val" / "cat" / "img1.jpg").write_text("not an image")
    meta = prepare(folder_root, tmp_path / "p", workers=0, skip_bad=True)
    assert meta["splits"]["train"]["images"] == 11 and meta["splits"]["train"]["skipped"] == 1
    assert meta["splits"]["train"]["skipped_files"][0].startswith(str(bad))
    assert meta["splits"]["val"]["images"] == 5
    train = open_dataset(tmp_path / "p", "train")
    assert train.labels.tolist() == [0] * 4 + [1] * 3 + [2] * 4
    assert (tmp_path / "p" / "train.u8").stat().st_size == 11 * 3 * 256 * 256
    assert DatasetStats.load(tmp_path / "p" / "alexnet-stats").count == 11


def test_damaged_files_are_named(folder_root, tmp_path):
    prepare(folder_root, tmp_path / "p", workers=0)
    with open(tmp_path / "p" / "val.u8", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(DataError, match="val.u8: 1000 bytes .* damaged: re-run prepare with --overwrite"):
        open_dataset(tmp_path / "p", "val")


def disk_full_at(monkeypatch, module, name_ends):
    """``module.write_all`` fills the disk at the first write to a file whose name ends with
    ``name_ends``: half of it is written, then ENOSPC, as os.write reports it (no file name)."""
    write_all = module.write_all

    def filling(handle, data):
        if str(handle.name).endswith(name_ends):
            write_all(handle, memoryview(data).cast("B")[:len(memoryview(data).cast("B")) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(handle, data)
    monkeypatch.setattr(module, "write_all", filling)


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_a_full_disk_mid_file_is_one_line_and_a_rerun_continues(folder_root, tmp_path, monkeypatch, fmt):
    clean = prepare(folder_root, tmp_path / "clean", format=fmt, workers=0, batch_size=2)
    data = f"val{'.u8' if fmt == 'raw' else '.jpg'}"
    with monkeypatch.context() as patch:
        disk_full_at(patch, packed_module, data)
        with pytest.raises(DataError) as error:
            prepare(folder_root, tmp_path / "p", format=fmt, workers=0, batch_size=2)
    assert str(error.value) == (f"{tmp_path / 'p' / data}: cannot write (no space left on its device); free space "
                                f"and re-run prepare (it continues where it stopped), or pack into another folder")
    # train, finished before, is whole; val goes on from where it stopped, its half write dropped
    assert np.array_equal(np.load(tmp_path / "p" / "train.labels.npy"), np.load(tmp_path / "clean" / "train.labels.npy"))
    assert int(np.load(tmp_path / "p" / ".prepare" / "val.state.npz")["done"]) == 0
    assert prepare(folder_root, tmp_path / "p", format=fmt, workers=0, batch_size=2)["splits"] == clean["splits"]
    for split in ("train", "val"):
        same_items(open_dataset(tmp_path / "p", split), open_dataset(tmp_path / "clean", split))


def test_a_full_disk_while_writing_the_index_is_one_line(folder_root, tmp_path, monkeypatch):
    disk_full_at(monkeypatch, storage_module, ".part")  # any file written atomically: train.labels.npy first
    with pytest.raises(StorageError) as error:  # write_atomically's own one line
        prepare(folder_root, tmp_path / "p", workers=0)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'p' / 'train.labels.npy'}: ") and "no space left" in message.lower()
    assert [p.name for p in (tmp_path / "p").iterdir() if p.name.endswith(".part")] == []  # no half file left


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "its file system is read-only"),
                                          (errno.EACCES, "permission denied")])
def test_a_read_only_destination_is_one_line(folder_root, tmp_path, monkeypatch, code, reason):
    # As root, a folder with mode 0o555 is still writable: os.mkdir fails as it would elsewhere.
    (tmp_path / "ro").mkdir()
    mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")) and os.path.isdir(os.path.dirname(path)):
            raise OSError(code, os.strerror(code), str(path))
        return mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(DataError) as error:
        prepare(folder_root, tmp_path / "ro" / "p", workers=0)
    assert str(error.value) == (f"{tmp_path / 'ro' / 'p'}: cannot write ({reason}); make the destination "
                                f"writable, or pack into another folder")
