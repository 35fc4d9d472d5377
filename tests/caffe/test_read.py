"""alexnet.caffe: reading .caffemodel files (both formats, legacy and current blob shapes, fields
in any order, packed and unpacked values) and mapping them onto the canonical state dict, with
one-line errors for files that are not AlexNet's. The files come from caffemodel_writer, which
writes them byte by byte from caffe.proto's field numbers and layer-type numbers, not from the
package's schema."""

import itertools
import re

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import build_model
from alexnet.caffe import read_caffemodel, schema, to_canonical
from alexnet.errors import CaffeModelError
from alexnet.model.spec import resolve
from alexnet.model.state import canonical_shapes
from caffemodel_writer import (POOL_AVE, V1_LAYER_TYPES, WITHIN_CHANNEL, Blob, Layer, Net, blob, blob_bytes,
                               build_net, layer_table, random_state, save, serialize, write_caffemodel)

#: Arbitrary small shapes under the canonical names: read_caffemodel takes any.
TINY_SHAPES = {"conv1": (4, 3, 3, 3), "conv2": (6, 2, 3, 3), "conv3": (5, 6, 3, 3), "conv4": (4, 5, 1, 1),
               "conv5": (2, 2, 2, 2), "fc6": (7, 8), "fc7": (3, 7), "fc8": (10, 3)}


def tiny_state(seed=0, **shapes):
    rng = np.random.default_rng(seed)
    state = {}
    for layer, shape in dict(TINY_SHAPES, **shapes).items():
        state[f"{layer}.weight"] = rng.standard_normal(shape, dtype=np.float32)
        state[f"{layer}.bias"] = rng.standard_normal(shape[0], dtype=np.float32)
    return state


def layer_named(net, name):
    return next(layer for layer in net.layer if layer.name == name)


def raises_one_line(path, match):
    """pytest.raises for a CaffeModelError whose one line names ``path`` and matches ``match``."""
    class Check:
        def __enter__(self):
            self.raised = pytest.raises(CaffeModelError, match=match)
            self.info = self.raised.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self.raised.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message and message.startswith(f"{path}: "), message
            return result
    return Check()


# --- the schema: bytes for packed floats ---------------------------------------------------

def test_packed_floats_as_caffe_writes_them_are_read_as_bytes():
    values = np.array([0.0, -1.5, 3.25, 1e-30, np.inf], np.float32)
    read = schema.BlobProto.FromString(blob_bytes(blob(values)))  # caffe.proto: repeated float, packed
    assert np.array_equal(np.frombuffer(b"".join(read.data), "<f4"), values)
    assert list(read.shape.dim) == [5]  # BlobShape's dims, packed as caffe.proto declares them


def test_unpacked_floats_are_unknown_to_the_bytes_schema_and_kept():
    data = blob_bytes(Blob(np.array([1.0, 2.0], np.float32), (2,), legacy_shape=True, packed=False))
    assert b"\x2d" + np.float32(1).tobytes() + b"\x2d" + np.float32(2).tobytes() in data  # field 5, fixed32
    read = schema.BlobProto.FromString(data)
    assert len(read.data) == 0 and read.SerializeToString() == data  # kept as unknown fields


# --- reading: formats, shapes, layer orders, field order ---------------------------------------

LAYOUTS = list(itertools.product(("V1", "V2"), (False, True), (False, True), (False, True), (False, True)))


@pytest.mark.parametrize("form,legacy,caffenet,data_and_loss,shuffle", LAYOUTS)
def test_read_recovers_every_layer(tmp_path, form, legacy, caffenet, data_and_loss, shuffle):
    state = tiny_state()
    path = write_caffemodel(tmp_path / "net.caffemodel", state, format=form, legacy_shapes=legacy,
                            caffenet=caffenet, with_data_and_loss=data_and_loss, shuffle_fields=shuffle)
    net = read_caffemodel(path)
    table = layer_table(caffenet, data_and_loss)
    assert net.format == form and net.name == ("CaffeNet" if caffenet else "AlexNet")
    assert [(l.name, l.type, l.bottoms, l.tops) for l in net.layers] == [row[:4] for row in table]
    for layer in net.layers:
        if layer.type in ("Convolution", "InnerProduct"):
            weight, bias = state[f"{layer.name}.weight"], state[f"{layer.name}.bias"]
            expected = weight[:, ::-1] if layer.name == "conv1" else weight  # Caffe's BGR
            assert len(layer.blobs) == 2 and layer.blobs[0].dtype == np.float32
            assert np.array_equal(layer.blobs[0], expected) and np.array_equal(layer.blobs[1], bias)
            assert layer.params["num_output"] == weight.shape[0] and layer.params["bias_term"] is True
        else:
            assert layer.blobs == []
    assert net["conv2"].params == {"num_output": 6, "kernel": 5, "stride": 1, "pad": 2, "group": 2, "bias_term": True}
    assert net["conv1"].params["stride"] == 4 and net["conv1"].params["group"] == 1
    assert net["conv4"].params["group"] == 2 and net["conv3"].params["pad"] == 1
    assert net["norm1"].params == {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0,
                                   "norm_region": "ACROSS_CHANNELS"}
    assert net["pool5"].params == {"pool": "MAX", "kernel": 3, "stride": 2, "pad": 0}
    assert net["drop7"].params == {"dropout_ratio": 0.5}


@pytest.mark.parametrize("form", ["V1", "V2"])
def test_parameters_other_than_the_defaults_are_read_as_written(tmp_path, form):
    """bvlc_alexnet's LRN size and β, max pooling and dropout 0.5 are caffe.proto's defaults: a
    parameter read from the wrong field would pass as its default there. Here every one differs."""
    net = build_net(tiny_state(), format=form)
    layers = {layer.name: layer for layer in net.layers + net.layer}
    layers["norm1"].settings.update(local_size=3, alpha=2e-4, beta=0.5, k=2.0, norm_region=WITHIN_CHANNEL)
    layers["pool2"].settings.update(pool=POOL_AVE, kernel_size=2, stride=1, pad=1)
    layers["drop6"].settings.update(dropout_ratio=0.25)
    layers["conv3"].settings.update(bias_term=0, pad=2)
    layers["fc7"].settings.update(bias_term=0)
    read = read_caffemodel(save(net, tmp_path / "net.caffemodel"))
    assert read["norm1"].params == {"local_size": 3, "alpha": 2e-4, "beta": 0.5, "k": 2.0,
                                    "norm_region": "WITHIN_CHANNEL"}
    assert read["pool2"].params == {"pool": "AVE", "kernel": 2, "stride": 1, "pad": 1}
    assert read["drop6"].params == {"dropout_ratio": 0.25}
    assert read["conv3"].params["bias_term"] is False and read["conv3"].params["pad"] == 2
    assert read["fc7"].params["bias_term"] is False


def test_the_v1_layer_types_of_other_nets_are_named(tmp_path):
    """Every V1 layer type number the reader knows, written from caffe.proto's LayerType."""
    net = build_net(tiny_state(), format="V1", with_data_and_loss=False)
    others = [kind for kind in V1_LAYER_TYPES if kind not in {row[1] for row in layer_table()}]
    net.layers += [Layer(f"extra{i}", kind) for i, kind in enumerate(others)]
    read = read_caffemodel(save(net, tmp_path / "net.caffemodel"))
    assert [layer.type for layer in read.layers][-len(others):] == others


def test_shuffled_fields_really_are_out_of_order(tmp_path):
    state = tiny_state()
    path = write_caffemodel(tmp_path / "net.caffemodel", state, shuffle_fields=True)
    data = path.read_bytes()
    assert data.startswith(b"\xa2\x06")  # field 100 (layer) before field 1 (name)
    normal = serialize(build_net(state))
    assert data != normal and len(data) == len(normal)
    shuffled, written = schema.NetParameter.FromString(data), schema.NetParameter.FromString(normal)
    for message in (shuffled, written):  # the fillers, multipliers and data settings, in their own order
        message.DiscardUnknownFields()
    assert shuffled == written


@pytest.mark.parametrize("form,shuffle", [("V1", False), ("V2", True)])
def test_unpacked_values(tmp_path, form, shuffle):
    state = tiny_state()
    path = write_caffemodel(tmp_path / "net.caffemodel", state, format=form, packed=False, shuffle_fields=shuffle)
    assert np.float32(state["fc8.bias"][0]).tobytes() in path.read_bytes()
    net = read_caffemodel(path)
    assert np.array_equal(net["fc8"].blobs[0], state["fc8.weight"])
    assert np.array_equal(net["conv1"].blobs[0], state["conv1.weight"][:, ::-1])


def test_double_data_and_a_packed_field_split_in_records(tmp_path):
    state = tiny_state()
    net = build_net(state)
    fc7 = layer_named(net, "fc7")
    fc7.blobs[0].double = True  # double_data
    fc7.blobs[1].records = 2  # a writer may split a packed field
    read = read_caffemodel(save(net, tmp_path / "net.caffemodel"))
    assert np.array_equal(read["fc7"].blobs[0], state["fc7.weight"])
    assert np.array_equal(read["fc7"].blobs[1], state["fc7.bias"])


# --- mapping onto the canonical state, at full size ---------------------------------------------

def check_full_size(path, state, num_classes):
    net = read_caffemodel(path)
    assert np.array_equal(net["conv1"].blobs[0], state["conv1.weight"][:, ::-1])  # the file holds BGR
    canonical, info = to_canonical(net, path)
    assert list(canonical) == list(state)
    for key, value in state.items():
        assert canonical[key].dtype == torch.float32 and canonical[key].is_contiguous()
        assert torch.equal(canonical[key], torch.from_numpy(value)), key  # conv1 back in RGB
    assert info["num_classes"] == num_classes
    build_model(num_classes=num_classes, initialize=False).load_state_dict(canonical)
    return info


@pytest.mark.slow
def test_full_size_v1_caffenet_with_legacy_shapes(tmp_path):
    """bvlc_reference_caffenet's kind of file: V1 layers, 4-d legacy shapes, pool before norm."""
    state = random_state(1000, seed=1)
    path = write_caffemodel(tmp_path / "caffenet.caffemodel", state, format="V1", legacy_shapes=True,
                            caffenet=True)
    info = check_full_size(path, state, 1000)
    assert info["format"] == "V1" and info["layout"] == "caffenet" and info["name"] == "CaffeNet"
    assert info["skipped"] == [("data", "Data"), ("loss", "SoftmaxWithLoss")]
    assert [p["name"] for p in info["lrn"]] == ["norm1", "norm2"]
    assert [name for name, _ in info["order"][1:5]] == ["conv1", "relu1", "pool1", "norm1"]


@pytest.mark.slow
def test_full_size_v2_alexnet_of_10_classes_fine_tuned(tmp_path):
    """A deploy file of the current format, its fc8 renamed as fine-tuning does (fc8_flickr)."""
    state = random_state(10, seed=2)
    net = build_net(state, with_data_and_loss=False)
    layer_named(net, "fc8").name = "fc8_flickr"
    path = save(net, tmp_path / "alexnet.caffemodel")
    info = check_full_size(path, state, 10)
    assert info["format"] == "V2" and info["layout"] == "alexnet" and info["skipped"] == []
    assert info["lrn"][0] == {"name": "norm1", "local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0,
                              "norm_region": "ACROSS_CHANNELS"}
    assert info["pooling"][2] == {"name": "pool5", "pool": "MAX", "kernel": 3, "stride": 2, "pad": 0}
    assert info["names"] == {**{name: name for name in TINY_SHAPES}, "fc8": "fc8_flickr"}


# --- files that are no caffemodel -------------------------------------------------------------

def test_random_bytes(tmp_path):
    path = tmp_path / "random.caffemodel"
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    with raises_one_line(path, r"not a caffemodel"):
        read_caffemodel(path)


def test_a_prototxt(tmp_path):
    path = tmp_path / "deploy.caffemodel"
    path.write_text('name: "AlexNet"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n}\n')
    with raises_one_line(path, r"not a caffemodel \(a text file; a \.prototxt describes a net but holds no weights\)"):
        read_caffemodel(path)


def test_a_png(tmp_path):
    path = tmp_path / "image.caffemodel"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="PNG")
    with raises_one_line(path, r"not a caffemodel \(a PNG image\)"):
        read_caffemodel(path)


def test_empty_missing_and_folder(tmp_path):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with raises_one_line(empty, r"empty file \(0 bytes\)"):
        read_caffemodel(empty)
    with raises_one_line(tmp_path / "none.caffemodel", r"cannot read the file"):
        read_caffemodel(tmp_path / "none.caffemodel")
    with raises_one_line(tmp_path, r"cannot read the file \(it is a folder, where a file belongs\)"):
        read_caffemodel(tmp_path)


def test_a_message_without_layers(tmp_path):
    path = save(Net(name="nothing"), tmp_path / "net.caffemodel")
    with raises_one_line(path, r"not a caffemodel \(a protobuf message without layers\)"):
        read_caffemodel(path)


@pytest.mark.parametrize("shuffle", [False, True])
def test_truncated(tmp_path, shuffle):
    whole = write_caffemodel(tmp_path / "whole.caffemodel", tiny_state(), shuffle_fields=shuffle).read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(whole[:len(whole) - 3])
    with raises_one_line(path, rf"truncated or corrupt caffemodel \({len(whole) - 3} bytes; protobuf: "):
        read_caffemodel(path)


def test_both_layer_lists(tmp_path):
    net = build_net(tiny_state())
    net.layers.append(Layer("old", "Convolution"))
    path = save(net, tmp_path / "net.caffemodel")
    with raises_one_line(path, r"both the V1 \(layers\) and the current \(layer\) lists"):
        read_caffemodel(path)


def test_a_blob_of_the_wrong_size(tmp_path):
    net = build_net(tiny_state())
    layer_named(net, "conv1").blobs[1].shape = (5,)  # conv1's bias: 4 values
    path = save(net, tmp_path / "net.caffemodel")
    with raises_one_line(path, r"layer 'conv1': blob 1 holds 4 values, its shape \(5,\) needs 5"):
        read_caffemodel(path)


# --- nets that are not AlexNet -------------------------------------------------------------------

def mapped(tmp_path, net):
    path = save(net, tmp_path / "net.caffemodel")
    return path, lambda: to_canonical(read_caffemodel(path), path)


def test_a_missing_layer(tmp_path):
    net = build_net(tiny_state())
    del net.layer[[l.name for l in net.layer].index("conv3")]
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, re.escape("no conv3 (the layers with weights: conv1, conv2, conv4, conv5, fc6, fc7, "
                                         "fc8)")):
        run()


def test_an_extra_layer_after_fc8_and_between(tmp_path):
    net = build_net(tiny_state())
    net.layer.append(Layer("fc9", "InnerProduct", ["fc8"], ["fc9"], [blob(np.ones((2, 10))), blob(np.ones(2))],
                           "inner_product_param", {"num_output": 2}))
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, r"an extra layer with weights, 'fc9' \(InnerProduct\), after fc8"):
        run()
    net = build_net(tiny_state())
    layer_named(net, "conv2").name = "conv2b"
    layer_named(net, "conv3").name = "conv2"
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, r"an extra layer with weights, 'conv2b' \(Convolution\), between conv1 and conv2"):
        run()


def test_layers_out_of_order_and_of_the_wrong_type(tmp_path):
    net = build_net(tiny_state())
    conv3, conv4 = layer_named(net, "conv3"), layer_named(net, "conv4")
    conv3.name, conv4.name = "conv4", "conv3"
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, r"'conv4' where conv3 belongs"):
        run()
    net = build_net(tiny_state())
    layer_named(net, "fc6").type = "Convolution"
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, r"layer 'fc6' is Convolution; AlexNet's fc6 is InnerProduct"):
        run()


@pytest.mark.parametrize("blobs", [1, 3])
def test_a_blob_count_other_than_two(tmp_path, blobs):
    net = build_net(tiny_state())
    conv5 = layer_named(net, "conv5")
    if blobs == 1:
        del conv5.blobs[1]
    else:
        conv5.blobs.append(blob(np.ones(2)))
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, rf"layer 'conv5' has {blobs} blob\(s\); AlexNet's layers have 2 \(weights, biases\)"):
        run()


def test_conv2_without_groups(tmp_path):
    """The shapes are checked layer by layer: a real conv1, then an ungrouped conv2."""
    net = build_net(tiny_state(conv1=(96, 3, 11, 11), conv2=(256, 96, 5, 5)))
    layer_named(net, "conv2").settings["group"] = 1
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, re.escape("conv2.weight: (256, 48, 5, 5) expected, got (256, 96, 5, 5) (the file's "
                                         "conv2 has group 1; AlexNet's has group 2)")):
        run()


def test_group_stride_and_pad_must_be_the_papers(tmp_path):
    state = tiny_state(conv1=(96, 3, 11, 11), conv2=(256, 48, 5, 5))
    net = build_net(state)
    layer_named(net, "conv2").settings["group"] = 1
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, re.escape("layer 'conv2' has group 1, stride 1, pad 2; AlexNet's conv2 has group 2, "
                                         "stride 1, pad 2")):
        run()
    net = build_net(state)
    layer_named(net, "conv1").settings["stride"] = 2
    path, run = mapped(tmp_path, net)
    with raises_one_line(path, r"layer 'conv1' has group 1, stride 2, pad 0; AlexNet's conv1 has group 1, stride 4"):
        run()


def test_the_class_count_comes_from_fc8(tmp_path):
    """fc8 (7, 4096) sets 7 classes; its fc6 (a tiny one) is then the first wrong shape."""
    state = {key: np.zeros(shape, np.float32)
             for key, shape in canonical_shapes(resolve(num_classes=7)).items() if not key.startswith("fc")}
    state.update({k: v for k, v in tiny_state(fc8=(7, 4096)).items() if k.startswith("fc")})
    path, run = mapped(tmp_path, build_net(state))
    with raises_one_line(path, re.escape("fc6.weight: (4096, 9216) expected, got (7, 8)")):
        run()
