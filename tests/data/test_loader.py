"""make_loader: one epoch in an order fixed by (seed, epoch), resumable, bad images on one line."""

import pytest
import torch
from helpers import write_image

from alexnet.data import make_loader, open_dataset
from alexnet.data.loader import default_workers
from alexnet.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


class Numbered(torch.utils.data.Dataset):
    """Image i is filled with i % 256 and labelled i: a batch shows which items it holds."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((3, 256, 256), i % 256, dtype=torch.uint8), i


def labels_of(loader):
    return [batch_labels.tolist() for _, batch_labels in loader]


def test_batches_have_the_promised_types_and_shapes():
    loader = make_loader(Numbered(10), 4, shuffle=False, workers=0)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 256, 256)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 3]
    assert torch.equal(images[:, 0, 0, 0], labels.to(torch.uint8))


def test_plain_order_and_drop_last():
    assert labels_of(make_loader(Numbered(7), 3, shuffle=False, workers=0)) == [[0, 1, 2], [3, 4, 5], [6]]
    loader = make_loader(Numbered(7), 3, shuffle=False, workers=0, drop_last=True)
    assert len(loader) == 2 and labels_of(loader) == [[0, 1, 2], [3, 4, 5]]


def test_shuffled_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        return sum(labels_of(make_loader(Numbered(50), 8, shuffle=True, seed=seed, epoch=epoch, workers=0)), [])
    first = order(0, 0)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert order(0, 0) == first
    assert order(0, 1) != first and order(1, 0) != first and order(0, 1) != order(1, 0)
    # the order is a seeded torch.Generator permutation, independent of the global RNG
    torch.manual_seed(123)
    assert order(0, 0) == first


def test_skip_batches_resumes_the_same_order_exactly():
    full = labels_of(make_loader(Numbered(50), 8, shuffle=True, seed=3, epoch=2, workers=0))
    for k in (0, 1, 5, 7):
        loader = make_loader(Numbered(50), 8, shuffle=True, seed=3, epoch=2, skip_batches=k, workers=0)
        assert len(loader) == 7 - k and loader.epoch_batches == 7
        assert labels_of(loader) == full[k:]
    with pytest.raises(ConfigError, match="skip_batches must be between 0 and 7"):
        make_loader(Numbered(50), 8, shuffle=True, skip_batches=8)


def test_workers_give_the_same_batches():
    serial = list(make_loader(Numbered(40), 8, shuffle=True, seed=1, workers=0))
    parallel = list(make_loader(Numbered(40), 8, shuffle=True, seed=1, workers=2))
    assert len(serial) == len(parallel) == 5
    for (a, la), (b, lb) in zip(serial, parallel):
        assert torch.equal(a, b) and torch.equal(la, lb)



def test_default_workers_leave_a_core_to_training(monkeypatch):
    from alexnet.data import loader as loader_module

    for cores, expected in ((1, 1), (2, 1), (4, 3), (64, 8)):
        monkeypatch.setattr(loader_module, "cpu_cores", lambda: cores)
        assert default_workers() == expected, cores
    # several training processes on a node (torchrun) share its cores: 16 cores, 4 processes
    for cores, processes, expected in ((16, 4, 3), (16, 1, 8), (2, 2, 1), (64, 8, 7)):
        monkeypatch.setattr(loader_module, "cpu_cores", lambda: cores)
        assert default_workers(processes) == expected, (cores, processes)


def _with_a_bad_image(root):
    bad = root / "train" / "dog" / "img1.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    return bad


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_image_stops_with_one_line_naming_it(folder_root, workers):
    bad = _with_a_bad_image(folder_root)
    loader = make_loader(open_dataset(folder_root, "train"), 4, shuffle=False, workers=workers)
    with pytest.raises(DataError) as error:
        list(loader)
    message = str(error.value)
    assert message.startswith(f"{bad}: truncated or corrupt JPEG image") and "\n" not in message
    assert "Traceback" not in message


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_drops_and_counts(folder_root, workers):
    bad = _with_a_bad_image(folder_root)
    (folder_root / "train" / "eel" / "img0.jpg").write_bytes(b"")
    dataset = open_dataset(folder_root, "train", skip_bad=True)
    loader = make_loader(dataset, 4, shuffle=False, workers=workers)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [4, 3, 3]  # 12 images, two bad
    assert loader.skipped == 2 and loader.consumed == 12
    assert loader.skipped_files[0].startswith(str(bad))
    good = [label for _, labels in batches for label in labels.tolist()]
    assert good == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_pin_memory_and_bad_arguments():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer; got 0"):
        make_loader(Numbered(4), 0, shuffle=False)
    with pytest.raises(ConfigError, match="workers must be 0"):
        make_loader(Numbered(4), 2, shuffle=False, workers=-1)
    assert len(list(make_loader(Numbered(4), 2, shuffle=False, workers=0, pin_memory=torch.cuda.is_available()))) == 2


def test_an_empty_epoch_yields_nothing():
    assert list(make_loader(Numbered(3), 4, shuffle=True, drop_last=True, workers=0)) == []


def test_folder_images_reach_the_loader_unchanged(tmp_path):
    from alexnet.data.images import load_image
    root = tmp_path / "d"
    for split in ("train", "val"):
        write_image(root / split / "only" / "a.jpg", 333, 280, seed=4)
    images, labels = next(iter(make_loader(open_dataset(root, "train"), 2, shuffle=False, workers=0)))
    assert torch.equal(images[0], load_image(root / "train" / "only" / "a.jpg")) and labels.tolist() == [0]
