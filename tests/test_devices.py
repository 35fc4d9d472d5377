"""--devices parsing: layouts chosen from the devices, and one clear line for every mistake."""

import pytest
import torch

import alexnet.devices as devices_module
from alexnet.devices import DeviceRequest, Placement
from alexnet.errors import ConfigError, DeviceError

CPU = torch.device("cpu")


def resolve_placement(text, layout=None, towers=2):
    return DeviceRequest.parse(text, layout).resolve(towers)


def _placed(text, layout=None, towers=2):
    p = resolve_placement(text, layout, towers)
    return p.layout, [str(d) for d in p.devices]


def test_layout_follows_the_devices(fake_gpus):
    fake_gpus(2)
    assert _placed("0,1") == ("towers", ["cuda:0", "cuda:1"])
    assert _placed("cuda:1,cuda:0") == ("towers", ["cuda:1", "cuda:0"])
    assert _placed("0") == ("grouped", ["cuda:0"])
    assert _placed("cpu") == ("grouped", ["cpu"])
    assert _placed("cpu,cpu") == ("towers", ["cpu", "cpu"])
    assert _placed("0,cpu") == ("towers", ["cuda:0", "cpu"])
    assert _placed("0", layout="towers") == ("towers", ["cuda:0", "cuda:0"])
    assert _placed("auto") == ("towers", ["cuda:0", "cuda:1"])
    assert _placed("auto", layout="grouped") == ("grouped", ["cuda:0"])
    assert _placed("auto", towers=1) == ("grouped", ["cuda:0"])


@pytest.mark.parametrize("count,expected", [(0, ("grouped", ["cpu"])), (1, ("grouped", ["cuda:0"])),
                                            (3, ("towers", ["cuda:0", "cuda:1"]))])
def test_auto(fake_gpus, count, expected):
    fake_gpus(count)
    assert _placed("auto") == expected


@pytest.mark.parametrize("count,text,message", [
    (0, "0,1", "cuda:0 requested but no CUDA device is visible; use --devices auto, cpu"),
    (1, "0,1", "cuda:1 requested but 1 CUDA device is visible"),
    (2, "cuda:5", "cuda:5 requested but 2 CUDA devices are visible"),
    (2, "0,1,2", "one or two devices"),
    (2, "gpu0", "'gpu0' is not a device"),
    (2, "0,", "empty device name"),
    (2, "mps", "MPS backend is not available"),
])
def test_errors_name_the_device(fake_gpus, count, text, message):
    fake_gpus(count)
    with pytest.raises(DeviceError, match=message) as info:
        resolve_placement(text)
    assert "\n" not in str(info.value)


def test_layout_and_variant_conflicts(fake_gpus):
    fake_gpus(2)
    with pytest.raises(DeviceError, match="grouped runs on one device"):
        resolve_placement("0,1", layout="grouped")
    with pytest.raises(DeviceError, match="single column"):
        resolve_placement("0,1", towers=1)
    with pytest.raises(DeviceError, match="--layout"):
        resolve_placement("0", layout="pipeline")


def test_auto_on_this_machine_follows_what_torch_sees():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    placement = resolve_placement("auto")
    if count >= 2:
        assert placement == Placement("towers", (torch.device("cuda", 0), torch.device("cuda", 1)))
    elif count == 1:
        assert placement == Placement("grouped", (torch.device("cuda", 0),))
    elif not devices_module.mps_available():
        assert placement == Placement("grouped", (CPU,))


def test_the_library_layout_rules():
    """What build_model accepts: Placement.of, the one place the layout rules live."""
    assert Placement.of("grouped", None) == Placement("grouped", (CPU,))
    assert Placement.of("towers", ["cpu"]).devices == (CPU, CPU)
    assert Placement.of("towers", [0, "cpu"]).devices == (torch.device("cuda", 0), CPU)
    for layout, devices, towers, message in (("grouped", ["cpu", "cpu"], 2, "grouped layout runs on one device"),
                                             ("towers", ["cpu"] * 3, 2, "one or two devices; got 3"),
                                             ("towers", ["cpu"], 1, "needs the two-GPU net"),
                                             ("pipeline", ["cpu"], 2, "layout must be one of grouped, towers")):
        with pytest.raises(ConfigError, match=message):
            Placement.of(layout, devices, towers)


def test_a_request_records_and_reads_back_as_the_user_spelled_it():
    for text in ("auto", "0,1", "cpu", "cpu,cpu", "0,cpu"):
        request = DeviceRequest.parse(text, "towers")
        assert str(request) == text
        assert DeviceRequest.parse(**request.as_dict()) == request
    assert DeviceRequest.of(["cpu", 1]) == DeviceRequest.parse("cpu,1")
    assert DeviceRequest.of(None) == DeviceRequest.parse("auto")
