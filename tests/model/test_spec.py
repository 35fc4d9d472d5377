"""The layer table and the built models against the paper's numbers (FACTS §1, §5, §8)."""

import pytest
import torch

from alexnet import build_model
from alexnet.model.spec import resolve

# FACTS §1: parameters per layer (weights + biases) of the two-GPU net.
PAPER_PARAMS = {
    "conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
    "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000,
}
PAPER_TOTAL = 60_965_224

# FACTS §1: canonical (grouped) weight shapes.
CANONICAL_SHAPES = {
    "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
    "fc7": (4096, 4096), "fc8": (1000, 4096),
}

# Figure 2's caption: neurons per layer. Its first number (253,440) is an error in the paper:
# conv1 has 55·55·96 = 290,400 neurons.
FIGURE2_NEURONS = [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]

# FACTS §5: the one-GPU net is 48-128-192-192-256 with FC 4096-4096-1000; counted by hand
# from those widths (kernel·kernel·in·out + out).
ONE_GPU_PARAMS = {
    "conv1": 11 * 11 * 3 * 48 + 48, "conv2": 5 * 5 * 48 * 128 + 128, "conv3": 3 * 3 * 128 * 192 + 192,
    "conv4": 3 * 3 * 192 * 192 + 192, "conv5": 3 * 3 * 192 * 256 + 256,
    "fc6": 9216 * 4096 + 4096, "fc7": 4096 * 4096 + 4096, "fc8": 4096 * 1000 + 1000,
}


def _param_counts(model):
    counts = {}
    for name, tensor in model.state_dict().items():
        layer = name.split(".")[0]
        counts[layer] = counts.get(layer, 0) + tensor.numel()
    return counts


def test_table_parameter_counts_match_the_paper():
    spec = resolve()
    assert {layer.name: layer.params for layer in spec.layers} == PAPER_PARAMS
    assert spec.params == PAPER_TOTAL == sum(PAPER_PARAMS.values())


@pytest.mark.parametrize("layout,devices", [("grouped", ["meta"]), ("towers", ["meta", "meta"])])
def test_built_models_have_the_paper_parameters_and_canonical_shapes(layout, devices):
    model = build_model(layout=layout, devices=devices, initialize=False)
    assert sum(p.numel() for p in model.parameters()) == PAPER_TOTAL
    assert _param_counts(model) == PAPER_PARAMS
    state = model.state_dict()
    for layer, shape in CANONICAL_SHAPES.items():
        assert tuple(state[f"{layer}.weight"].shape) == shape
        assert tuple(state[f"{layer}.bias"].shape) == (shape[0],)


def test_grouped_net_groups_only_the_own_tower_layers():
    model = build_model(devices=["meta"], initialize=False)
    groups = {name: model.get_submodule(name).groups for name in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


def _conv_outputs(model, x):
    """Pre-pooling output shapes of every conv and fc layer, from forward hooks."""
    shapes = {}
    for name in CANONICAL_SHAPES:
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    model(x)
    return shapes


@pytest.mark.parametrize("size", [224, 227])
def test_layer_output_shapes_match_figure_2(size):
    model = build_model(devices=["meta"], initialize=False)
    shapes = _conv_outputs(model, torch.empty(2, 3, size, size, device="meta"))
    assert shapes["conv1"] == (96, 55, 55)
    assert shapes["conv2"] == (256, 27, 27)
    assert shapes["conv3"] == shapes["conv4"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    neurons = []
    for name in CANONICAL_SHAPES:
        n = 1
        for d in shapes[name]:
            n *= d
        neurons.append(n)
    assert neurons == FIGURE2_NEURONS


@pytest.mark.parametrize("overlap", [True, False])
def test_pooling_variants_keep_the_output_sizes(overlap):
    """§3.4: 3x3/2 (overlapping) and 2x2/2 both give 55 -> 27 -> 13 -> 6."""
    model = build_model(devices=["meta"], initialize=False, overlap=overlap)
    kernel = 3 if overlap else 2
    for name in ("pool1", "pool2", "pool5"):
        pool = model.get_submodule(name)
        assert (pool.kernel_size, pool.stride) == (kernel, 2)
    x = torch.empty(1, 3, 224, 224, device="meta")
    sizes = []
    model.pool1.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model.pool2.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model.pool5.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    assert model(x).shape == (1, 1000)
    assert sizes == [27, 13, 6]


def test_one_gpu_net_matches_the_papers_footnote():
    spec = resolve(variant="one-gpu")
    widths = [layer.out_channels for layer in spec.layers]
    assert widths == [48, 128, 192, 192, 256, 4096, 4096, 1000]
    assert {layer.name: layer.params for layer in spec.layers} == ONE_GPU_PARAMS
    model = build_model(variant="one-gpu", devices=["meta"], initialize=False)
    assert _param_counts(model) == ONE_GPU_PARAMS
    assert all(model.get_submodule(f"conv{i}").groups == 1 for i in range(1, 6))
    assert model.lrn1.groups == 1 and model.lrn1.channels == 48
    assert model(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


def test_multiply_adds_match_the_paper():
    """FACTS §8: 724 M multiply-adds per image forward (conv: out pixels · out maps · k² · in maps per group)."""
    spec = resolve()
    direct = (55 * 55 * 96 * 11 * 11 * 3 + 27 * 27 * 256 * 5 * 5 * 48 + 13 * 13 * 384 * 3 * 3 * 256
              + 13 * 13 * 384 * 3 * 3 * 192 + 13 * 13 * 256 * 3 * 3 * 192 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert spec.macs == direct
    assert round(spec.macs / 1e6) == 724


def test_exchange_points_and_their_sizes():
    """FACTS §8: per image, each direction: pool2 half 21,632, pool5 half 4,608, fc6 and fc7 halves 2,048."""
    points = resolve().exchanges()
    assert [(p["layer"], p["reads"], p["values_per_direction"], p["directions"]) for p in points] == [
        ("conv3", "pool2", 21_632, ("0->1", "1->0")),
        ("fc6", "pool5", 4_608, ("0->1", "1->0")),
        ("fc7", "fc6", 2_048, ("0->1", "1->0")),
        ("fc8", "fc7", 2_048, ("1->0",)),
    ]
    assert resolve(variant="one-gpu").exchanges() == []


@pytest.mark.parametrize("kwargs,message", [
    ({"variant": "three-gpu"}, "variant"),
    ({"layout": "pipeline"}, "layout"),
    ({"num_classes": 0}, "--num-classes"),
    ({"depth": 9}, "unknown model setting 'depth'"),
    ({"dropout": 1.0}, "dropout"),
    ({"lrn_impl": "magic"}, "lrn_impl"),
    ({"init": "xavier"}, "init"),
    ({"variant": "one-gpu", "layout": "towers"}, "towers"),
    ({"layout": "grouped", "devices": ["cpu", "cpu"]}, "one device"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**{"devices": ["meta"], **kwargs})
