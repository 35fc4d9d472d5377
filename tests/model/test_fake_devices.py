"""Two GPUs checked without GPUs: the towers net on fake cuda:0 and cuda:1.

Under FakeTensorMode tensors carry a device but no data, so the whole forward pass
runs on a CPU-only machine, and any op mixing tensors of two devices raises exactly as it
would on real GPUs. A TorchDispatchMode records every copy that changes device. (The
backward pass needs real CUDA contexts; tests/model/test_gpu.py checks it on real GPUs.)
"""

from collections import Counter

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet import build_model

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)
N = 4


class DeviceCopies(TorchDispatchMode):
    """Records (source device, destination device, shape) of every device-changing copy."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._to_copy.default and args[0].device != out.device:
            self.copies.append((str(args[0].device), str(out.device), tuple(args[0].shape)))
        elif func is torch.ops.aten.copy_.default and args[0].device != args[1].device:
            self.copies.append((str(args[1].device), str(args[0].device), tuple(args[1].shape)))
        return out


# The input hand-off, then the four exchange points and nothing else (FACTS §1, §8).
EXPECTED_COPIES = Counter({
    ("cpu", "cuda:0", (N, 3, 227, 227)): 1,  # the image to tower 0
    ("cpu", "cuda:1", (N, 3, 227, 227)): 1,  # the image to tower 1
    ("cuda:0", "cuda:1", (N, 128, 13, 13)): 1,  # conv3: pool2 halves, both ways
    ("cuda:1", "cuda:0", (N, 128, 13, 13)): 1,
    ("cuda:0", "cuda:1", (N, 128, 6, 6)): 1,  # fc6: pool5 halves, both ways
    ("cuda:1", "cuda:0", (N, 128, 6, 6)): 1,
    ("cuda:0", "cuda:1", (N, 2048)): 1,  # fc7: fc6 halves, both ways
    ("cuda:1", "cuda:0", (N, 2048)): 2,  # fc7's other direction, and fc8: tower 1's fc7 half to tower 0
})


def _tower_of(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("towers.") else 0


def test_towers_on_two_fake_gpus_cross_only_at_the_four_points():
    with FakeTensorMode():
        model = build_model(layout="towers", devices=["cuda:0", "cuda:1"], seed=0)
        # Every parameter of tower k is on cuda:k; fc8 is on tower 0's device.
        for name, param in model.named_parameters():
            assert param.device == (CUDA0, CUDA1)[_tower_of(name)], name
        # Every activation of tower k is on cuda:k.
        wrong = []

        def check(name, expected):
            def hook(module, inputs, output):
                if output.device != expected:
                    wrong.append((name, str(output.device)))
            return hook

        checked = 0
        for name, module in model.named_modules():
            if name.startswith("towers.") and name.count(".") == 2:
                module.register_forward_hook(check(name, (CUDA0, CUDA1)[_tower_of(name)]))
                checked += 1
        assert checked == 2 * 14  # conv1-5, fc6-7, lrn1-2, pool1/2/5, drop6-7 in each tower
        x = torch.empty(N, 3, 224, 224)  # the batch arrives on the CPU
        with DeviceCopies() as recorder:
            logits = model(x)
        assert not wrong
        assert logits.device == CUDA0 and logits.shape == (N, 1000)
        assert Counter(recorder.copies) == EXPECTED_COPIES

        # The transfer counters report the same traffic, all of it between devices.
        traffic = model.traffic()
        per_image_values = {"conv3": 2 * 21_632, "fc6": 2 * 4_608, "fc7": 2 * 2_048, "fc8": 2_048}
        for point, values in per_image_values.items():
            assert traffic[point]["values"] == N * values, point
            assert traffic[point]["bytes"] == traffic[point]["copied_bytes"] == 4 * N * values, point
        assert traffic["input"]["copied_bytes"] == 2 * 4 * N * 3 * 227 * 227



@pytest.mark.parametrize("blocks,edges", [
    ("caffe", [(N, 2, 55, 55), (N, 2, 27, 27)]),  # bvlc_alexnet: LRN before pooling
    ("caffenet", [(N, 2, 27, 27), (N, 2, 13, 13)]),  # CaffeNet: after
])
def test_caffes_lrn_adds_one_exchange_each_of_two_edge_maps(blocks, edges):
    """Caffe's LRN crosses the towers: at norm1 and norm2 each tower receives the 2 maps at the
    other's edge, and nothing else moves besides the paper's four points."""
    with FakeTensorMode():
        model = build_model(layout="towers", devices=["cuda:0", "cuda:1"], initialize=False, blocks=blocks)
        with DeviceCopies() as recorder:
            model(torch.empty(N, 3, 227, 227))
        expected = EXPECTED_COPIES + Counter({(a, b, shape): 1 for shape in edges
                                              for a, b in (("cuda:0", "cuda:1"), ("cuda:1", "cuda:0"))})
        assert Counter(recorder.copies) == expected
        traffic = model.traffic()
        for point, shape in zip(("lrn1", "lrn2"), edges):
            values = 2 * shape[0] * shape[1] * shape[2] * shape[3]  # both directions
            assert traffic[point]["values"] == values and traffic[point]["copied_bytes"] == 4 * values, point


def test_a_layer_on_the_wrong_device_is_caught():
    """The check above is not vacuous: a tower-1 layer left on cuda:0 fails the forward pass.
    (An FC layer: torch 2.11's fake convolution, unlike 2.14's, does not compare its operands'
    devices; its matrix multiply does, in both.)"""
    with FakeTensorMode():
        model = build_model(layout="towers", devices=["cuda:0", "cuda:1"], initialize=False)
        fc7 = model.towers[1].fc7
        model.towers[1].fc7 = torch.nn.Linear(fc7.in_features, fc7.out_features, device="cuda:0")
        with pytest.raises(RuntimeError, match="device"):
            model(torch.empty(2, 3, 224, 224))


def test_mixed_pair_gpu_and_cpu():
    """--devices 0,cpu: tower 1 on the CPU; logits on cuda:0; copies only at the same points."""
    with FakeTensorMode():
        model = build_model(layout="towers", devices=["cuda:0", "cpu"], initialize=False)
        x = torch.empty(N, 3, 224, 224, device="cuda:0")
        with DeviceCopies() as recorder:
            logits = model(x)
        assert logits.device == CUDA0
        moves = Counter((src, dst) for src, dst, _ in recorder.copies)
        assert moves == Counter({("cuda:0", "cpu"): 4, ("cpu", "cuda:0"): 4})
