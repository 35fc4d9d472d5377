"""Class-folder datasets and what --data may point at; every bad layout named on one line."""

import errno
import os
import shutil

import pytest
import torch
from helpers import write_image
from PIL import Image

import alexnet.data.images as images_module
from alexnet.data import FolderDataset, make_loader, open_dataset, resolve_data_root
from alexnet.data.images import load_image
from alexnet.errors import DataError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def test_classes_are_sorted_folder_names_and_labels_follow(folder_root):
    write_image(folder_root / "train" / "ant" / "x.jpg")
    write_image(folder_root / "val" / "ant" / "x.jpg")
    (folder_root / "train" / ".hidden").mkdir()
    (folder_root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    train = open_dataset(folder_root, "train")
    assert isinstance(train, FolderDataset) and train.root == folder_root
    assert train.classes == ["ant", "cat", "dog", "eel"]
    assert len(train) == 13
    assert [label for _, label in train.samples] == [0] + [1] * 4 + [2] * 4 + [3] * 4
    image, label = train[1]
    assert label == 1 and torch.equal(image, load_image(folder_root / "train" / "cat" / "img0.jpg"))
    assert open_dataset(folder_root, "val").classes == train.classes


def test_a_warp_dataset_reads_every_file_warped_with_either_decoder(folder_root):
    val = open_dataset(folder_root, "val", resize="warp")
    assert isinstance(val, FolderDataset) and val.resize == "warp" and "resize=warp" in repr(val)
    assert open_dataset(folder_root, "val").resize == "shorter-side"
    for index, (path, label) in enumerate(val.samples):
        image, got = val[index]
        assert got == label and torch.equal(image, load_image(path, resize="warp"))
        with Image.open(path) as file:
            square = file.width == file.height  # a square image reads the same either way
        assert torch.equal(image, load_image(path)) == square, path
    tv = FolderDataset(folder_root, "val", decoder="torchvision", resize="warp")
    assert (tv[0][0].float() - val[0][0].float()).abs().mean() < 1.5
    with pytest.raises(DataError, match="resize must be one of shorter-side, warp"):
        open_dataset(folder_root, "val", resize="crop")


def test_imagenet_style_names(tmp_path):
    for split in ("train", "val"):
        for synset in ("n01440764", "n01443537"):
            write_image(tmp_path / "in" / split / synset / f"{synset}_1.JPEG")
    assert open_dataset(tmp_path / "in", "val").classes == ["n01440764", "n01443537"]


def test_resolve_data_root_accepts_folders_and_names_what_is_wrong(folder_root, tmp_path):
    assert resolve_data_root(folder_root) == folder_root
    assert resolve_data_root(str(folder_root)) == folder_root
    with pytest.raises(DataError, match=f"^{tmp_path / 'nowhere'}: no such file or folder$"):
        resolve_data_root(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match=f"^{tmp_path / 'file.txt'}: not a folder"):
        resolve_data_root(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"^{tmp_path / 'empty'}: not a dataset"):
        resolve_data_root(tmp_path / "empty")


@pytest.mark.parametrize("missing", ["train", "val"])
def test_a_missing_split_is_named(folder_root, missing):
    shutil.rmtree(folder_root / missing)
    with pytest.raises(DataError, match=f"^{folder_root / missing}: missing"):
        resolve_data_root(folder_root)
    with pytest.raises(DataError, match=f"^{folder_root / missing}: missing"):
        open_dataset(folder_root, "train")


def test_an_empty_class_folder_is_named(folder_root):
    (folder_root / "train" / "fox").mkdir()
    (folder_root / "val" / "fox").mkdir()
    write_image(folder_root / "val" / "fox" / "a.jpg")
    with pytest.raises(DataError, match=f"^{folder_root / 'train' / 'fox'}: empty class folder"):
        open_dataset(folder_root, "train")


def test_a_split_without_class_folders_is_named(folder_root):
    shutil.rmtree(folder_root / "val")
    (folder_root / "val").mkdir()
    write_image(folder_root / "val" / "stray.jpg")
    with pytest.raises(DataError, match=f"^{folder_root / 'val'}: no class folders"):
        open_dataset(folder_root, "val")


def test_val_classes_must_be_trains(folder_root):
    shutil.rmtree(folder_root / "val" / "dog")
    write_image(folder_root / "val" / "emu" / "a.jpg")
    with pytest.raises(DataError) as error:
        open_dataset(folder_root, "val")
    assert str(error.value) == f"{folder_root / 'val'}: val classes differ from train's (missing dog; extra emu)"
    assert len(open_dataset(folder_root, "train")) == 12  # train alone is fine


def test_a_non_image_file_is_named_when_read(folder_root):
    notes = folder_root / "train" / "dog" / "notes.txt"
    notes.write_text("these are dogs\n")
    dataset = open_dataset(folder_root, "train")
    index = [path for path, _ in dataset.samples].index(str(notes))
    with pytest.raises(DataError, match=f"^{notes}: not an image file"):
        dataset[index]


def test_bad_split_name():
    with pytest.raises(DataError, match="split must be one of train, val; got 'test'"):
        open_dataset(None, "test")


LOOP = "a symlink loop (following the link never reaches a file or folder)"


def read_all(dataset):
    """Every image through the loader (as stats, prepare and train read them); the loader."""
    loader = make_loader(dataset, 4, shuffle=False, workers=0)
    images = sum(len(labels) for _, labels in loader)
    return images, loader


@pytest.mark.parametrize("kind", ["loop", "broken"])
def test_a_symlink_loop_or_broken_link_among_images_is_one_line_and_skip_bad_skips_it(folder_root, kind):
    link = folder_root / "train" / "dog" / "img9.jpg"
    os.symlink(link.name if kind == "loop" else "gone.jpg", link)  # itself: every stat is ELOOP
    reason = LOOP if kind == "loop" else "a broken symlink (its target gone.jpg does not exist)"
    dataset = open_dataset(folder_root, "train")  # listing it is fine: it is read like any image
    assert len(dataset) == 13 and str(link) in [path for path, _ in dataset.samples]
    with pytest.raises(DataError) as error:
        read_all(dataset)
    assert str(error.value) == f"{link}: {reason}, where an image should be; fix or remove it (--skip-bad skips it)"
    images, loader = read_all(open_dataset(folder_root, "train", skip_bad=True))
    assert images == 12 and loader.skipped == 1 and loader.skipped_files == [str(error.value)]


def test_an_image_this_user_may_not_open_is_one_line_and_skip_bad_skips_it(folder_root, monkeypatch):
    # Tests run as root, for whom chmod 000 changes nothing: opening it is made to fail as it
    # would for anyone else.
    locked = folder_root / "train" / "cat" / "img1.jpg"

    def fake_open(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)
    monkeypatch.setattr(images_module, "open", fake_open, raising=False)
    with pytest.raises(DataError) as error:
        read_all(open_dataset(folder_root, "train"))
    assert str(error.value) == (f"{locked}: permission denied (this user may not read it), where an image "
                                f"should be; fix or remove it (--skip-bad skips it)")
    images, loader = read_all(open_dataset(folder_root, "train", skip_bad=True))
    assert images == 11 and loader.skipped == 1


@pytest.mark.parametrize("kind", ["loop", "broken"])
def test_a_split_entry_that_may_have_been_a_class_folder_is_one_line(folder_root, kind):
    link = folder_root / "train" / "fox"
    os.symlink("fox" if kind == "loop" else "/nowhere/fox", link)
    reason = LOOP if kind == "loop" else "a broken symlink (its target /nowhere/fox does not exist)"
    message = f"{link}: {reason}, where a class folder should be; fix or remove it (--skip-bad skips it)"
    for split in ("train", "val"):  # val checks its classes against train's
        with pytest.raises(DataError) as error:
            open_dataset(folder_root, split)
        assert str(error.value) == message
    train = open_dataset(folder_root, "train", skip_bad=True)
    assert train.classes == ["cat", "dog", "eel"] and train.skipped_entries == [message]
    assert open_dataset(folder_root, "val", skip_bad=True).classes == train.classes


def test_a_class_folder_that_cannot_be_listed_is_one_line(folder_root, monkeypatch):
    locked, scandir = folder_root / "train" / "dog", os.scandir

    def fake_scandir(path="."):
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    with pytest.raises(DataError, match=f"^{locked}: cannot list the folder \\(Permission denied\\)$"):
        open_dataset(folder_root, "train", skip_bad=True)  # a whole class: not skipped
