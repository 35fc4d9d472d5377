"""The authors' own net (layers-145.cfg and net 147, FACTS §6b) as variants of the layer table.

The expected numbers are written here from the cfg files: cnorm2's formula and constants, the
0.03 initialization, and net 147's padding and map sizes; the block order against a forward
pass written out from the cfg is in test_block_order.py.
"""

import pytest
import torch

from alexnet import build_model, resolve
from alexnet.model.lrn import SpatialResponseNorm
from alexnet.model.summary import format_summary, summarize

from helpers import spatial_norm_by_loops as _spatial_norm_by_loops


def test_cnorm2_is_cuda_convnets_response_norm_within_each_map():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64) * 40  # 0-255-scale activations, odd sizes
    torch.testing.assert_close(SpatialResponseNorm()(x), _spatial_norm_by_loops(x), rtol=1e-12, atol=1e-12)
    # It never mixes maps: changing one map leaves the others' outputs alone.
    y = x.clone()
    y[:, 1] *= 3
    unchanged = [0, 2, 3]
    torch.testing.assert_close(SpatialResponseNorm()(y)[:, unchanged], SpatialResponseNorm()(x)[:, unchanged])


def test_cnorm2_keeps_the_dtype_and_computes_in_fp32_under_autocast():
    x = (torch.randn(1, 2, 9, 9) * 100).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = SpatialResponseNorm()(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), _spatial_norm_by_loops(x.float()), rtol=1e-2, atol=1e-2)


def test_towers_equal_grouped_for_the_authors_net_in_training_mode_with_gradients():
    settings = dict(blocks="authors", init="authors", num_classes=10, dropout=0.0)  # masks differ by layout
    grouped = build_model(seed=2, **settings)
    towers = build_model(layout="towers", devices=["cpu", "cpu"], seed=2, **settings)
    torch.manual_seed(0)
    image = torch.randn(2, 3, 224, 224) * 60
    results = []
    for model in (grouped, towers):
        x = image.clone().requires_grad_(True)
        out = model(x)
        out.square().sum().backward()  # through cnorm2, the LRNs and the exchanges
        results.append((out, x.grad))
    (out_g, grad_g), (out_t, grad_t) = results
    torch.testing.assert_close(out_g, out_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_g, grad_t, rtol=1e-4, atol=1e-4 * grad_g.abs().max().item())


def test_net_147_map_sizes_and_padding_are_the_cfgs():
    """layers-147.cfg: 2x2/2 pooling with ceil rounding, conv2 padding 1, conv5 padding 0:
    55 -> 28 -> 26 -> 13 -> 13 -> 13 -> 11 -> 6."""
    spec = resolve(overlap=False, no_overlap_as="authors")
    sizes = [(layer.name, layer.pad, layer.out_size, layer.pooled_size) for layer in spec.layers[:5]]
    assert sizes == [("conv1", 0, 55, 28), ("conv2", 1, 26, 13), ("conv3", 1, 13, 13), ("conv4", 1, 13, 13),
                     ("conv5", 0, 11, 6)]
    assert spec.params == 60_965_224  # the same parameters: fc6 still reads 256·6·6
    paper_reading = resolve(overlap=False)
    assert [(layer.out_size, layer.pooled_size) for layer in paper_reading.layers[:5]] == [
        (55, 27), (27, 13), (13, 13), (13, 13), (13, 6)]
    model = build_model(overlap=False, no_overlap_as="authors", num_classes=10, seed=0).eval()
    seen = {}
    for name in ("pool1", "conv2", "pool2", "conv5", "pool5"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape[-1]))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    assert seen == {"pool1": 28, "conv2": 26, "pool2": 13, "conv5": 11, "pool5": 6}


def test_the_authors_initialization_is_their_cfgs():
    """initW 0.01 in conv1, conv2 and the FC layers, 0.03 in conv3-conv5; initB 1 in conv2,
    conv4, conv5, fc6, fc7."""
    state = build_model(init="authors", seed=0).state_dict()
    for layer, std in {"conv1": 0.01, "conv2": 0.01, "conv3": 0.03, "conv4": 0.03, "conv5": 0.03,
                       "fc6": 0.01, "fc7": 0.01, "fc8": 0.01}.items():
        assert state[f"{layer}.weight"].std().item() == pytest.approx(std, rel=0.03), layer
        bias = 1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(state[f"{layer}.bias"] == bias), layer


def test_no_lrn_in_the_authors_blocks_drops_cnorm2_too_as_their_net_148():
    spec = resolve(blocks="authors", lrn=False)
    assert [layer.ops for layer in spec.layers[:2]] == [("pool", "relu"), ("relu", "pool")]
    assert resolve(blocks="authors")["conv2"].ops == ("relu", "lrn", "cnorm", "pool")


def test_summary_shows_the_authors_blocks_and_the_parameter_count():
    text = format_summary(summarize(resolve(blocks="authors", init="authors"), "grouped", ["cpu"]))
    assert "the authors' blocks" in text
    conv1 = next(line for line in text.splitlines() if line.startswith("conv1"))
    conv2 = next(line for line in text.splitlines() if line.startswith("conv2"))
    assert conv1.endswith("LRN, maxpool 3/2, ReLU")
    assert conv2.endswith("ReLU, LRN, cnorm (spatial response norm), maxpool 3/2")
    assert "total parameters: 60,965,224" in text
