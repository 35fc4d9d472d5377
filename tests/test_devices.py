"""--devices parsing: layouts chosen from the devices, and one clear line for every mistake."""

import pytest
import torch

import alexnet.devices as devices_module
from alexnet.devices import resolve_placement
from alexnet.errors import DeviceError

CPU = torch.device("cpu")


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this many CUDA devices are visible (parsing only; nothing runs on them)."""
    def set_count(n):
        monkeypatch.setattr(devices_module, "cuda_count", lambda: n)
        monkeypatch.setattr(devices_module, "mps_available", lambda: False)
    return set_count


def _placed(text, layout=None, variant="two-gpu"):
    p = resolve_placement(text, layout, variant)
    return p.layout, [str(d) for d in p.devices]


def test_layout_follows_the_devices(gpus):
    gpus(2)
    assert _placed("0,1") == ("towers", ["cuda:0", "cuda:1"])
    assert _placed("cuda:1,cuda:0") == ("towers", ["cuda:1", "cuda:0"])
    assert _placed("0") == ("grouped", ["cuda:0"])
    assert _placed("cpu") == ("grouped", ["cpu"])
    assert _placed("cpu,cpu") == ("towers", ["cpu", "cpu"])
    assert _placed("0,cpu") == ("towers", ["cuda:0", "cpu"])
    assert _placed("0", layout="towers") == ("towers", ["cuda:0", "cuda:0"])
    assert _placed("auto") == ("towers", ["cuda:0", "cuda:1"])
    assert _placed("auto", layout="grouped") == ("grouped", ["cuda:0"])
    assert _placed("auto", variant="one-gpu") == ("grouped", ["cuda:0"])


@pytest.mark.parametrize("count,expected", [(0, ("grouped", ["cpu"])), (1, ("grouped", ["cuda:0"])),
                                            (3, ("towers", ["cuda:0", "cuda:1"]))])
def test_auto(gpus, count, expected):
    gpus(count)
    assert _placed("auto") == expected


@pytest.mark.parametrize("count,text,message", [
    (0, "0,1", "cuda:0 requested but no CUDA device is visible"),
    (1, "0,1", "cuda:1 requested but 1 CUDA device is visible"),
    (2, "cuda:5", "cuda:5 requested but 2 CUDA devices are visible"),
    (2, "0,1,2", "one or two devices"),
    (2, "gpu0", "'gpu0' is not a device"),
    (2, "0,", "empty device name"),
    (2, "mps", "MPS backend is not available"),
])
def test_errors_name_the_device(gpus, count, text, message):
    gpus(count)
    with pytest.raises(DeviceError, match=message) as info:
        resolve_placement(text)
    assert "\n" not in str(info.value)


def test_layout_and_variant_conflicts(gpus):
    gpus(2)
    with pytest.raises(DeviceError, match="grouped runs on one device"):
        resolve_placement("0,1", layout="grouped")
    with pytest.raises(DeviceError, match="single column"):
        resolve_placement("0,1", variant="one-gpu")
    with pytest.raises(DeviceError, match="--layout"):
        resolve_placement("0", layout="pipeline")


def test_this_machine_without_gpus_gets_a_usable_default():
    placement = resolve_placement("auto")
    assert placement.primary.type in ("cpu", "cuda", "mps")
