"""The same properties on real GPUs. Skipped where fewer CUDA devices are visible."""

import pytest
import torch

from alexnet import build_model
from helpers import needs_gpus

pytestmark = pytest.mark.gpu


def _batch(device, n=4):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 3, 224, 224, generator=g) * 255 - 120).to(device)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full fp32 on the GPU: TF32 convolutions and matmuls (cuDNN's default on Ampere and
    later) round to 10 bits, which alone can exceed the 1e-3 tolerance below."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _compare(devices, layout="towers"):
    reference = build_model(layout="grouped", devices=["cpu"], seed=0, dropout=0.0).double()
    model = build_model(layout=layout, devices=devices, seed=0, dropout=0.0)
    x = _batch("cpu")
    expected = reference(x.double())
    out = model(x.to(model.devices[0]))
    out.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.device == param.device, name
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())
    return model


@needs_gpus(1)
def test_grouped_on_one_gpu_matches_the_cpu():
    _compare(["cuda:0"], layout="grouped")


@needs_gpus(1)
def test_towers_on_one_gpu_and_on_gpu_plus_cpu():
    _compare(["cuda:0", "cuda:0"])
    model = _compare(["cuda:0", "cpu"])
    traffic = model.traffic()
    assert all(traffic[p]["copied_bytes"] > 0 for p in ("conv3", "fc6", "fc7", "fc8"))


@needs_gpus(2)
def test_towers_on_two_gpus():
    model = _compare(["cuda:0", "cuda:1"])
    for name, param in model.named_parameters():
        expected = 1 if name.startswith("towers.1.") else 0
        assert param.device == torch.device("cuda", expected), name
    traffic = model.traffic()
    assert traffic["conv3"]["copied_bytes"] == 4 * 2 * 4 * 21_632
    assert traffic["fc8"]["copied_bytes"] == 4 * 4 * 2_048


@needs_gpus(1)
def test_bf16_autocast_and_channels_last_on_gpu():
    model = build_model(devices=["cuda:0"], seed=0, dropout=0.0).to(memory_format=torch.channels_last)
    x = _batch("cuda:0").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    reference = build_model(devices=["cuda:0"], seed=0, dropout=0.0)(_batch("cuda:0"))
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.1 * reference.abs().max().item())
