"""§3.5's block order, checked against the paper's net written out by hand.

``reference_forward`` below is the whole network in ``torch.nn.functional`` calls, with the
numbers typed in from the paper (Figure 2, §3.3, §3.4, §4.2; FACTS §1-§3), not read from the
package's layer table, LRN or dropout. Every layout and every way of running blocks 1 and 2
(the fused ReLU -> LRN -> max-pool pass or the modules one by one, the fast or the stock LRN)
must give its logits.

The weights are not the paper's N(0, 0.01) initialization: with it the logits barely depend on
the input, and a missing ReLU would go unseen. He-scaled weights (std sqrt(2/fan_in)) and
random biases carry a 0-255-scale input through to the logits, and the LRN divides by clearly
more than k there, so each step of each block changes the answer.
"""

import pytest
import torch
import torch.nn.functional as F

from alexnet import build_model
from alexnet.analysis.activations import relu_activations
from helpers import spatial_norm_by_loops

NUM_CLASSES = 10

#: Figure 2: each conv layer's (stride, padding, groups). conv2, conv4 and conv5 read only
#: their own tower's maps (groups=2); conv1 reads the image and conv3 both towers (dense).
CONVS = {"conv1": (4, 0, 1), "conv2": (1, 2, 2), "conv3": (1, 1, 1), "conv4": (1, 1, 2), "conv5": (1, 1, 2)}
TOWERS = 2


def tower_lrn(a, towers=TOWERS, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """§3.3 as the authors' code computes it (α divided by n, FACTS §2):
    b_c = a_c / (k + (α/n)·Σ_{j=c-2}^{c+2} a_j²)^β, the window cut off (zero padding) at the
    first and last map of each tower's half of the channels, so it never crosses towers."""
    channels = a.shape[1]
    per_tower = channels // towers
    squares = a * a
    out = torch.empty_like(a)
    for c in range(channels):
        first = c // per_tower * per_tower
        lo, hi = max(first, c - n // 2), min(first + per_tower - 1, c + n // 2)
        out[:, c] = a[:, c] / (k + alpha / n * squares[:, lo:hi + 1].sum(1)) ** beta
    return out


#: The steps a block may hold, by name.
STEPS = {
    "relu": F.relu,
    "lrn": tower_lrn,
    "cnorm": spatial_norm_by_loops,
    # Caffe's LRN: the same window, α, β, but k = 1 and across all the layer's maps (both towers).
    "clrn": lambda a: F.local_response_norm(a, 5, alpha=1e-4, beta=0.75, k=1.0),
    "pool": lambda a: F.max_pool2d(a, kernel_size=3, stride=2),  # §3.4: overlapping, z=3, s=2
    "dropout": lambda a: a * 0.5,  # §4.2 at test time: "multiply their outputs by 0.5"
}
#: The authors' non-overlapping net 147 (layers-147.cfg): 2x2/2 pooling with cuda-convnet's ceil
#: rounding, conv2 padding 1 and conv5 padding 0.
POOL_147 = lambda a: F.max_pool2d(a, kernel_size=2, stride=2, ceil_mode=True)  # noqa: E731
PADDING_147 = {"conv2": 1, "conv5": 0}

#: What follows each layer, in order. "paper": §3.5 ("the ReLU non-linearity is applied to the
#: output of every convolutional and fully-connected layer"; LRN after the ReLU of conv1 and
#: conv2; max-pooling after the LRNs and after conv5), dropout after fc6 and fc7 (§4.2).
BLOCK_ORDERS = {
    "paper": {
        "conv1": ("relu", "lrn", "pool"),
        "conv2": ("relu", "lrn", "pool"),
        "conv3": ("relu",),
        "conv4": ("relu",),
        "conv5": ("relu", "pool"),
        "fc6": ("relu", "dropout"),
        "fc7": ("relu", "dropout"),
        "fc8": (),
    },
    # layers-145.cfg: conv1 has no neuron, rnorm1 reads it and pool1 applies the ReLU; conv2's
    # ReLU, rnorm2, then cnorm2 before pool2; conv5 has no neuron, pool3 applies it.
    "authors": {
        "conv1": ("lrn", "pool", "relu"),
        "conv2": ("relu", "lrn", "cnorm", "pool"),
        "conv3": ("relu",),
        "conv4": ("relu",),
        "conv5": ("pool", "relu"),
        "fc6": ("relu", "dropout"),
        "fc7": ("relu", "dropout"),
        "fc8": (),
    },
    # Caffe's bvlc_alexnet (norm after pool in CaffeNet); pooling rounds up in both.
    "caffe": {
        "conv1": ("relu", "clrn", "pool"), "conv2": ("relu", "clrn", "pool"), "conv3": ("relu",),
        "conv4": ("relu",), "conv5": ("relu", "pool"), "fc6": ("relu", "dropout"), "fc7": ("relu", "dropout"),
        "fc8": (),
    },
    "caffenet": {
        "conv1": ("relu", "pool", "clrn"), "conv2": ("relu", "pool", "clrn"), "conv3": ("relu",),
        "conv4": ("relu",), "conv5": ("relu", "pool"), "fc6": ("relu", "dropout"), "fc7": ("relu", "dropout"),
        "fc8": (),
    },
}


def reference_forward(state, x, order="paper", net_147=False, pool_ceil=False, dropout_scale=0.5, lrn=True,
                      pool_kernel=3):
    """The net in evaluation mode, from a canonical state dict (conv1.weight ... fc8.bias),
    in float64. x: (N, 3, 224, 224) crops; cuda-convnet reads them as 227x227 inputs with zeros
    in the 3 columns at the right and rows at the bottom (FACTS §3). ``order``: a key of
    ``BLOCK_ORDERS``; ``net_147``: the authors' non-overlapping pooling net; ``pool_ceil``: 3x3/2
    pooling that rounds up (Caffe's); ``dropout_scale``: what dropout multiplies by at test (1
    for inverted dropout); ``lrn=False``: the LRN ablation (§3.3's net without its LRNs);
    ``pool_kernel=2``: the pooling ablation (§3.4's 2x2/2, with the same padding and sizes).

    Returns the logits and ``taps``: every intermediate, as "conv1" (the layer's output) and
    "conv1.relu", "conv1.lrn", ... (after each step of its block)."""
    if x.shape[-1] == 224:
        h = torch.zeros(x.shape[0], 3, 227, 227, dtype=torch.float64)
        h[:, :, :224, :224] = x
    else:  # another size, read as it is (Caffe's nets)
        h = x.double()
    taps = {}
    for name, steps in BLOCK_ORDERS[order].items():
        weight, bias = state[f"{name}.weight"].double(), state[f"{name}.bias"].double()
        if name in CONVS:
            stride, padding, groups = CONVS[name]
            padding = PADDING_147.get(name, padding) if net_147 else padding
            h = F.conv2d(h, weight, bias, stride=stride, padding=padding, groups=groups)
        else:
            h = F.linear(h.flatten(1), weight, bias)  # (N, C, 6, 6) -> (N, C·36), channel-major
        taps[name] = h
        for step in steps:
            if step == "lrn" and not lrn:
                continue
            if step == "pool" and pool_kernel != 3:
                h = F.max_pool2d(h, kernel_size=pool_kernel, stride=2)
            elif step == "pool" and (net_147 or pool_ceil):
                h = POOL_147(h) if net_147 else F.max_pool2d(h, kernel_size=3, stride=2, ceil_mode=True)
            else:
                h = h * dropout_scale if step == "dropout" else STEPS[step](h)
            taps[f"{name}.{step}"] = h
    return h, taps


@pytest.fixture(scope="module")
def lively():
    """A canonical state dict whose logits depend strongly on the input, a batch of inputs on
    the 0-255 minus-mean scale, and the reference's logits and intermediates for them."""
    shapes = build_model(num_classes=NUM_CLASSES, initialize=False).state_dict()
    g = torch.Generator().manual_seed(2012)
    state = {}
    for key, like in shapes.items():
        if key.endswith(".weight"):
            gain = 2.0 if key == "conv1.weight" else 1.0  # larger conv1 maps: LRN1 bites harder
            state[key] = torch.randn(like.shape, generator=g) * gain * (2.0 / like[0].numel()) ** 0.5
        else:
            state[key] = torch.randn(like.shape, generator=g)
    x = torch.randn(3, 3, 224, 224, generator=g) * 50
    logits, taps = reference_forward(state, x)
    return state, x, logits, taps


def test_the_reference_net_depends_on_its_input(lively):
    """Otherwise the comparisons below would not see a missing ReLU or a misplaced LRN."""
    _, _, logits, taps = lively
    scale = logits.abs().max()
    # Every class's logit moves with the image by 100 times the comparisons' tolerance or more.
    assert (logits.std(0) > 100 * 1e-4 * scale).all()
    for layer in ("conv1", "conv2", "conv5", "fc7"):
        assert 0.2 < (taps[layer] < 0).double().mean() < 0.8, layer  # each ReLU zeroes a good share
    # The LRN divides by well over k^β = 2^0.75 somewhere, so its window matters.
    ratio = taps["conv1.relu"] / taps["conv1.lrn"]
    assert ratio[taps["conv1.relu"] > 0].max() > 1.2 * 2 ** 0.75
    # §4.2's halving of fc6 and fc7 at test moves the logits far beyond the tolerance.
    state, x = lively[:2]
    unhalved, _ = reference_forward(state, x, dropout_scale=1.0)
    assert (unhalved - logits).abs().max() > 100 * 1e-4 * scale


@pytest.mark.parametrize("lrn_impl", ["fast", "stock"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("layout", ["grouped", "towers"])
def test_logits_follow_the_papers_block_order(lively, layout, fuse, lrn_impl):
    """§3.5: conv -> ReLU -> LRN -> max-pool (blocks 1, 2), conv -> ReLU (3, 4), conv -> ReLU ->
    max-pool (5), fc -> ReLU -> dropout (6, 7), fc8; LRN inside each tower (§3.3), conv2/4/5
    on their own tower's maps, a 224 crop padded at the right and bottom (FACTS §3)."""
    state, x, expected, taps = lively
    devices = ["cpu", "cpu"] if layout == "towers" else ["cpu"]
    model = build_model(num_classes=NUM_CLASSES, layout=layout, devices=devices, initialize=False,
                        lrn_impl=lrn_impl, fuse_relu_lrn_pool=fuse)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        logits = model(x).double()
        fc7 = relu_activations(model, x).double()
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * scale)
    fc7_expected = taps["fc7.relu"]
    torch.testing.assert_close(fc7, fc7_expected, rtol=1e-4, atol=1e-4 * fc7_expected.abs().max().item())


@pytest.mark.parametrize("ablation", [{"lrn": False}, {"overlap": False}], ids=["no-lrn", "non-overlapping"])
def test_the_papers_ablations_compute_the_net_without_lrn_or_with_2x2_pooling(lively, ablation):
    """§3.3's and §3.4's comparisons: the same net without its two LRNs, and with 2x2/2 pooling
    in place of 3x3/2 (55 -> 27 -> 13 -> 6 either way)."""
    state, x, with_both, _ = lively
    expected, taps = reference_forward(state, x, lrn=ablation.get("lrn", True),
                                       pool_kernel=3 if ablation.get("overlap", True) else 2)
    assert taps["conv5.pool"].shape[-1] == 6
    scale = expected.abs().max().item()
    assert (expected - with_both).abs().max() > 100 * 1e-4 * scale  # the ablation changes the answer
    model = build_model(num_classes=NUM_CLASSES, initialize=False, **ablation)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.eval()(x).double()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("net_147", [False, True], ids=["layers-145", "layers-147"])
@pytest.mark.parametrize("layout,fuse", [("grouped", True), ("grouped", False), ("towers", True)])
def test_the_authors_net_follows_their_cfgs_block_order(lively, layout, fuse, net_147):
    """``blocks="authors"`` is layers-145.cfg's order, with cnorm2; with ``--no-overlap-as
    authors`` and no overlap it is net 147. Both layouts, the fused path allowed or not."""
    state, x, _, _ = lively
    expected, taps = reference_forward(state, x, "authors", net_147)
    scale = expected.abs().max().item()
    assert (expected.std(0) > 100 * 1e-4 * scale).all()  # a wrong order would show
    ratio = taps["conv2.lrn"] / taps["conv2.cnorm"]
    assert ratio[taps["conv2.lrn"] > 0].max() > 1.1  # cnorm2 divides by clearly more than 1 somewhere
    devices = ["cpu", "cpu"] if layout == "towers" else ["cpu"]
    model = build_model(num_classes=NUM_CLASSES, layout=layout, devices=devices, initialize=False,
                        fuse_relu_lrn_pool=fuse, blocks="authors", overlap=not net_147, no_overlap_as="authors")
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        logits = model(x).double()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * scale)
    paper, _ = reference_forward(state, x, "paper", net_147)
    assert not torch.allclose(paper, expected, rtol=1e-2, atol=1e-2 * scale)  # the two orders differ here


@pytest.mark.parametrize("blocks", ["caffe", "caffenet"])
@pytest.mark.parametrize("layout", ["grouped", "towers"])
def test_caffes_nets_compute_what_caffe_computes(lively, layout, blocks):
    """Caffe's bvlc_alexnet and CaffeNet: LRN with k = 1 across both towers' maps (the towers
    swap their edge maps for it), ceil-rounded pooling, inverted dropout (identity at test)."""
    state, x, _, _ = lively
    expected, _ = reference_forward(state, x, blocks, pool_ceil=True, dropout_scale=1.0)
    devices = ["cpu", "cpu"] if layout == "towers" else ["cpu"]
    model = build_model(num_classes=NUM_CLASSES, layout=layout, devices=devices, initialize=False, blocks=blocks,
                        dropout_style="inverted")
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.eval()(x).double()
    scale = expected.abs().max().item()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * scale)



def test_caffes_lrn_crossing_the_towers_changes_the_answer(lively, monkeypatch):
    """Otherwise the test above could not tell an LRN kept inside each tower from Caffe's."""
    state, x, _, _ = lively
    across, _ = reference_forward(state, x, "caffe", pool_ceil=True, dropout_scale=1.0)
    monkeypatch.setitem(STEPS, "clrn", lambda a: tower_lrn(a, k=1.0))
    inside, _ = reference_forward(state, x, "caffe", pool_ceil=True, dropout_scale=1.0)
    scale = across.abs().max().item()
    assert not torch.allclose(inside, across, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("layout", ["grouped", "towers"])
def test_caffes_ceil_rounded_pooling_reads_a_203_input(lively, layout):
    """203 -> conv1 49 -> pool1 24 -> conv2 24 -> pool2 12 (rounded down: 11) -> pool5 6 (5):
    only pooling that rounds up, as Caffe's does, reaches fc6's 6x6."""
    state, _, _, _ = lively
    x = torch.randn(2, 3, 203, 203, generator=torch.Generator().manual_seed(7)) * 50
    expected, taps = reference_forward(state, x, "caffe", pool_ceil=True, dropout_scale=1.0)
    assert taps["conv5.pool"].shape[-1] == 6
    devices = ["cpu", "cpu"] if layout == "towers" else ["cpu"]
    model = build_model(num_classes=NUM_CLASSES, layout=layout, devices=devices, initialize=False, blocks="caffe",
                        dropout_style="inverted")
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.eval()(x).double()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
