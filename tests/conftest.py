"""Fixtures shared by every test module (helper functions: helpers.py)."""

import shutil

import pytest
import torch

import alexnet.devices
from alexnet.data import generate_builtin, load_or_compute_stats
from alexnet.model.init import canonical_init
from alexnet.model.spec import resolve
from helpers import make_folder_dataset


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# Files go when their test or test module ends: a run folder holds checkpoints of 240 MB or
# more, and the suite writes hundreds of them (about 50 GB if pytest kept them to its end).
_MODULE_FOLDERS = {}


@pytest.fixture(autouse=True)
def _files_go_with_the_test(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def pytest_runtest_setup(item):
    if item.module not in _MODULE_FOLDERS:  # the module's first test: what its temporary folder held before
        base = item.config._tmp_path_factory.getbasetemp()
        _MODULE_FOLDERS.clear()
        _MODULE_FOLDERS[item.module] = set(base.iterdir())


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After the module's last test (its fixtures torn down): the folders its fixtures made."""
    if nextitem is None or nextitem.module is not item.module:
        base = item.config._tmp_path_factory.getbasetemp()
        for folder in set(base.iterdir()) - _MODULE_FOLDERS.pop(item.module, set()):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Nothing the test does touches ~/.cache/alexnet: the cache folder is the test's own."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALEXNET_CACHE", str(cache))
    return cache


@pytest.fixture
def fake_gpus(monkeypatch):
    """``fake_gpus(n)``: pretend n CUDA devices are visible and MPS is not, for code that only
    plans, parses or reports (nothing can run on them)."""
    def pretend(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(alexnet.devices, "mps_available", lambda: False)
    return pretend


@pytest.fixture
def folder_root(tmp_path):
    """Three classes of a few JPEG and PNG images of assorted sizes, as class folders."""
    return make_folder_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def paper_state():
    """One seeded canonical state dict of the paper's net, shared by the layout tests."""
    return canonical_init(resolve(), "paper", seed=1234)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The built-in generator at 2 training and 1 validation image per class (10 classes),
    with its statistics: a whole dataset that trains in seconds."""
    root = generate_builtin(tmp_path_factory.mktemp("data") / "tiny", train_per_class=2, val_per_class=1, workers=0)
    load_or_compute_stats(root, workers=0)
    return root
