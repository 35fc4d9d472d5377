"""Writes .caffemodel and .binaryproto files for the tests, byte by byte, in the layout of Caffe's
bvlc_alexnet (or, with ``caffenet=True``, bvlc_reference_caffenet: each pool before its norm):
data, conv1, relu1, norm1, pool1, conv2, ..., fc8, loss.

Every field number and enum value written here is typed in below from Caffe's own schema
(BVLC/caffe, ``src/caffe/proto/caffe.proto``, proto2), and the protobuf wire format is written
by hand: nothing comes from the package's schema (``alexnet.caffe.schema``) or from a protobuf
library, so a wrong number in the package shows as a test that fails. The files are what
Caffe writes: fields in the order of their numbers, packed floats and packed shape dims as
caffe.proto declares them, the layers' learning-rate multipliers and weight fillers and the
data layer's settings (fields the reader must step over) as in bvlc_alexnet's train_val.prototxt.

The layer parameters are Caffe's (deploy.prototxt of both models): LRN local_size 5, alpha 1e-4,
beta 0.75 (k left to its default, 1); max pooling 3/2; dropout 0.5; conv2, conv4, conv5 in 2
groups. Blobs are written as Caffe holds them: conv1's input channels in BGR order.

Any shapes work (the tests use tiny ones): num_output is taken from the arrays. A net is plain
data (``Net``, ``Layer``, ``Blob``) that a test may change before ``save`` writes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from alexnet.model.spec import resolve
from alexnet.model.state import canonical_shapes

# --- caffe.proto's facts ------------------------------------------------------------------------
# Each message: field -> (number, how it is written). "varint": int32/uint32/bool/enum; "float":
# fixed32; "string"; "floats": a repeated float not declared packed (one fixed32 record each);
# a message's name: a nested message of that kind.

MESSAGES: Dict[str, Dict[str, Tuple[int, str]]] = {
    # message NetParameter: name = 1; repeated V1LayerParameter layers = 2 (deprecated);
    # repeated LayerParameter layer = 100
    "NetParameter": {"name": (1, "string"), "layers": (2, "V1LayerParameter"), "layer": (100, "LayerParameter")},
    # message LayerParameter: name 1, type 2 (a string), bottom 3, top 4, repeated ParamSpec param 6,
    # repeated BlobProto blobs 7, repeated NetStateRule include 8, transform_param 100,
    # convolution_param 106, data_param 107, dropout_param 108, inner_product_param 117,
    # lrn_param 118, pooling_param 121
    "LayerParameter": {
        "name": (1, "string"), "type": (2, "string"), "bottom": (3, "string"), "top": (4, "string"),
        "param": (6, "ParamSpec"), "blobs": (7, "BlobProto"), "include": (8, "NetStateRule"),
        "transform_param": (100, "TransformationParameter"),
        "convolution_param": (106, "ConvolutionParameter"), "data_param": (107, "DataParameter"),
        "dropout_param": (108, "DropoutParameter"), "inner_product_param": (117, "InnerProductParameter"),
        "lrn_param": (118, "LRNParameter"), "pooling_param": (121, "PoolingParameter"),
    },
    # message V1LayerParameter: bottom 2, top 3, name 4, LayerType type 5 (an enum), blobs 6,
    # repeated float blobs_lr 7, repeated float weight_decay 8, convolution_param 10, data_param 11,
    # dropout_param 12, inner_product_param 17, lrn_param 18, pooling_param 19, include 32,
    # transform_param 36
    "V1LayerParameter": {
        "bottom": (2, "string"), "top": (3, "string"), "name": (4, "string"), "type": (5, "varint"),
        "blobs": (6, "BlobProto"), "blobs_lr": (7, "floats"), "weight_decay": (8, "floats"),
        "convolution_param": (10, "ConvolutionParameter"), "data_param": (11, "DataParameter"),
        "dropout_param": (12, "DropoutParameter"), "inner_product_param": (17, "InnerProductParameter"),
        "lrn_param": (18, "LRNParameter"), "pooling_param": (19, "PoolingParameter"),
        "include": (32, "NetStateRule"), "transform_param": (36, "TransformationParameter"),
    },
    # message ConvolutionParameter: num_output 1, bool bias_term 2, repeated pad 3, repeated
    # kernel_size 4, group 5, repeated stride 6, weight_filler 7, bias_filler 8
    "ConvolutionParameter": {
        "num_output": (1, "varint"), "bias_term": (2, "varint"), "pad": (3, "varint"), "kernel_size": (4, "varint"), "group": (5, "varint"),
        "stride": (6, "varint"), "weight_filler": (7, "FillerParameter"), "bias_filler": (8, "FillerParameter"),
    },
    # message InnerProductParameter: num_output 1, bool bias_term 2, weight_filler 3, bias_filler 4
    "InnerProductParameter": {"num_output": (1, "varint"), "bias_term": (2, "varint"),
                              "weight_filler": (3, "FillerParameter"), "bias_filler": (4, "FillerParameter")},
    # message LRNParameter: local_size 1, float alpha 2, float beta 3, norm_region 4, float k 5
    "LRNParameter": {"local_size": (1, "varint"), "alpha": (2, "float"), "beta": (3, "float"),
                     "norm_region": (4, "varint"), "k": (5, "float")},
    # message PoolingParameter: PoolMethod pool 1, kernel_size 2, stride 3, pad 4
    "PoolingParameter": {"pool": (1, "varint"), "kernel_size": (2, "varint"), "stride": (3, "varint"),
                         "pad": (4, "varint")},
    # message DropoutParameter: float dropout_ratio 1
    "DropoutParameter": {"dropout_ratio": (1, "float")},
    # message FillerParameter: string type 1, float value 2, float std 6
    "FillerParameter": {"type": (1, "string"), "value": (2, "float"), "std": (6, "float")},
    # message ParamSpec: float lr_mult 3, float decay_mult 4
    "ParamSpec": {"lr_mult": (3, "float"), "decay_mult": (4, "float")},
    # message NetStateRule: Phase phase 1
    "NetStateRule": {"phase": (1, "varint")},
    # message TransformationParameter: bool mirror 2, uint32 crop_size 3, string mean_file 4
    "TransformationParameter": {"mirror": (2, "varint"), "crop_size": (3, "varint"), "mean_file": (4, "string")},
    # message DataParameter: string source 1, uint32 batch_size 4, DB backend 8
    "DataParameter": {"source": (1, "string"), "batch_size": (4, "varint"), "backend": (8, "varint")},
}
# message BlobProto: int32 num 1, channels 2, height 3, width 4 (the deprecated 4-d shape);
# repeated float data = 5 [packed = true]; BlobShape shape = 7; repeated double double_data = 8
# [packed = true]. message BlobShape: repeated int64 dim = 1 [packed = true].
BLOB_LEGACY_SHAPE = {"num": 1, "channels": 2, "height": 3, "width": 4}
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA, SHAPE_DIM = 5, 7, 8, 1

#: enum V1LayerParameter.LayerType, by the current format's type names: AlexNet's CONVOLUTION = 4,
#: DATA = 5, DROPOUT = 6, INNER_PRODUCT = 14, LRN = 15, POOLING = 17, RELU = 18, SOFTMAX_LOSS = 21;
#: and ACCURACY = 1, CONCAT = 3, EUCLIDEAN_LOSS = 7, HDF5_DATA = 9, IMAGE_DATA = 12, SOFTMAX = 20,
#: SPLIT = 22, WINDOW_DATA = 24, MEMORY_DATA = 29, met in other nets of the V1 era.
V1_LAYER_TYPES = {"Convolution": 4, "Data": 5, "Dropout": 6, "InnerProduct": 14, "LRN": 15, "Pooling": 17,
                  "ReLU": 18, "SoftmaxWithLoss": 21, "Accuracy": 1, "Concat": 3, "EuclideanLoss": 7, "HDF5Data": 9,
                  "ImageData": 12, "Softmax": 20, "Split": 22, "WindowData": 24, "MemoryData": 29}
POOL_MAX, POOL_AVE = 0, 1  # enum PoolingParameter.PoolMethod: MAX = 0, AVE = 1, STOCHASTIC = 2
WITHIN_CHANNEL = 1  # enum LRNParameter.NormRegion: ACROSS_CHANNELS = 0, WITHIN_CHANNEL = 1
PHASE_TRAIN = 0  # enum Phase: TRAIN = 0, TEST = 1
DB_LMDB = 1  # enum DataParameter.DB: LEVELDB = 0, LMDB = 1

# --- what bvlc_alexnet's prototxts say ---------------------------------------------------------

LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75}
MAX_POOL = {"pool": POOL_MAX, "kernel_size": 3, "stride": 2}
DROPOUT = {"dropout_ratio": 0.5}
#: conv layer -> (kernel, stride, pad, group), as in bvlc_alexnet
CONVS = {"conv1": (11, 4, 0, 1), "conv2": (5, 1, 2, 2), "conv3": (3, 1, 1, 1), "conv4": (3, 1, 1, 2),
         "conv5": (3, 1, 1, 2)}
#: train_val.prototxt's training settings of a layer with weights: weights at lr_mult 1 with decay,
#: biases at lr_mult 2 without; Gaussian weights, constant biases.
LEARNING = ({"lr_mult": 1.0, "decay_mult": 1.0}, {"lr_mult": 2.0, "decay_mult": 0.0})
FILLERS = {"weight_filler": {"type": "gaussian", "std": 0.01}, "bias_filler": {"type": "constant", "value": 0.1}}
DATA_LAYER = {"include": {"phase": PHASE_TRAIN},
              "transform_param": {"mirror": 1, "crop_size": 227, "mean_file": "imagenet_mean.binaryproto"},
              "data_param": {"source": "ilsvrc12_train_lmdb", "batch_size": 256, "backend": DB_LMDB}}
#: The parameter message of each type of layer that has one.
PARAMETERS = {"Convolution": "convolution_param", "InnerProduct": "inner_product_param", "LRN": "lrn_param",
              "Pooling": "pooling_param", "Dropout": "dropout_param"}


@dataclass
class Blob:
    """A BlobProto: ``values`` (written as float32, or float64 with ``double``) and the shape it
    claims, in BlobShape or (``legacy_shape``) the 4-d num/channels/height/width padded with
    leading 1s; the values packed (split into ``records`` records, as a writer may) or one
    record per value."""

    values: np.ndarray
    shape: Tuple[int, ...]
    legacy_shape: bool = False
    packed: bool = True
    double: bool = False
    records: int = 1


@dataclass
class Layer:
    """A layer of either format: ``type`` is the current format's name ("Convolution"); a V1
    layer writes caffe.proto's LayerType number for it. ``settings`` go into the ``parameter``
    message (``convolution_param``, ...); a layer with blobs also carries train_val's learning
    multipliers and fillers; a Data layer its data settings."""

    name: str
    type: str
    bottoms: List[str] = field(default_factory=list)
    tops: List[str] = field(default_factory=list)
    blobs: List[Blob] = field(default_factory=list)
    parameter: Optional[str] = None
    settings: Dict = field(default_factory=dict)


@dataclass
class Net:
    """A NetParameter: its layers in the current format (``layer``) or in V1's (``layers``)."""

    name: str
    layer: List[Layer] = field(default_factory=list)
    layers: List[Layer] = field(default_factory=list)


def random_state(num_classes: int = 1000, seed: int = 0, scale: float = 0.01) -> dict:
    """A canonical state dict of float32 numpy arrays (normal, ``scale`` std) of the paper's net."""
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
            for key, shape in canonical_shapes(resolve(num_classes=num_classes)).items()}


def layer_table(caffenet: bool = False, with_data_and_loss: bool = True):
    """(name, type, bottoms, tops, settings or None) for every layer, in order."""
    rows = [("data", "Data", (), ("data", "label"), None)] if with_data_and_loss else []
    below = "data"
    for conv, (kernel, stride, pad, group) in CONVS.items():
        rows.append((conv, "Convolution", (below,), (conv,),
                     {"kernel_size": kernel, "stride": stride, "pad": pad, "group": group}))
        n = conv[-1]
        rows.append((f"relu{n}", "ReLU", (conv,), (conv,), None))
        below = conv
        blocks = {"1": ("norm", "pool"), "2": ("norm", "pool"), "5": ("pool",)}.get(n, ())
        for op in (reversed(blocks) if caffenet else blocks):
            rows.append((f"{op}{n}", "LRN" if op == "norm" else "Pooling", (below,), (f"{op}{n}",),
                         LRN if op == "norm" else MAX_POOL))
            below = f"{op}{n}"
    for fc in ("fc6", "fc7", "fc8"):
        rows.append((fc, "InnerProduct", (below,), (fc,), {}))
        below = fc
        if fc != "fc8":
            n = fc[-1]
            rows += [(f"relu{n}", "ReLU", (fc,), (fc,), None), (f"drop{n}", "Dropout", (fc,), (fc,), DROPOUT)]
    if with_data_and_loss:
        rows.append(("loss", "SoftmaxWithLoss", ("fc8", "label"), ("loss",), None))
    return rows


def blob(array, legacy_shapes: bool = False, packed: bool = True) -> Blob:
    array = np.asarray(array, np.float32)
    return Blob(array, tuple(array.shape), legacy_shapes, packed)


def build_net(state: Mapping, *, format: str = "V2", legacy_shapes: bool = False, caffenet: bool = False,
              with_data_and_loss: bool = True, packed: bool = True) -> Net:
    """The net of ``state`` (canonical names; numpy arrays or tensors)."""
    net = Net(name="CaffeNet" if caffenet else "AlexNet")
    for name, kind, bottoms, tops, settings in layer_table(caffenet, with_data_and_loss):
        layer = Layer(name, kind, list(bottoms), list(tops), parameter=PARAMETERS.get(kind), settings=dict(settings or {}))
        if f"{name}.weight" in state:
            weight, bias = (np.asarray(state[f"{name}.{part}"], np.float32) for part in ("weight", "bias"))
            if name == "conv1":
                weight = weight[:, ::-1]  # RGB -> Caffe's BGR
            layer.settings["num_output"] = weight.shape[0]
            layer.blobs = [blob(weight, legacy_shapes, packed), blob(bias, legacy_shapes, packed)]
        (net.layers if format == "V1" else net.layer).append(layer)
    return net


# --- the wire format: a record is its key (field number << 3 | wire type), then its value ------

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int32 is ten bytes, as protobuf writes it
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, pieces: List[bytes]) -> List[bytes]:
    """A length-delimited record (wire type 2) around ``pieces``, without joining them: a
    full-size fc6 is 150 MB."""
    return [_key(number, 2), _varint(sum(len(p) for p in pieces)), *pieces]


def _scalar(number: int, kind: str, value) -> List[bytes]:
    if kind == "varint":
        return [_key(number, 0), _varint(int(value))]
    if kind in ("float", "floats"):
        return [_key(number, 5), struct.pack("<f", value)]
    if kind == "string":
        return _delimited(number, [value.encode()])
    raise ValueError(kind)


def _message(kind: str, values: Mapping, reverse: bool) -> List[bytes]:
    """``values`` (field name -> value, a list for a repeated field) as a message of ``kind``."""
    records = []
    for name, value in values.items():
        number, how = MESSAGES[kind][name]
        for item in (value if isinstance(value, list) else [value]):
            pieces = (_delimited(number, _message(how, item, reverse)) if how in MESSAGES
                      else _scalar(number, how, item))
            records.append((number, pieces))
    return _in_order(records, reverse)


def _in_order(records, reverse: bool) -> List[bytes]:
    """A protobuf writer's order, by field number (a repeated field's items stay in order); with
    ``reverse``, the fields backwards: still a valid message, one no writer produces."""
    ordered = sorted(records, key=lambda record: -record[0] if reverse else record[0])
    return [piece for _, pieces in ordered for piece in pieces]


def _blob(b: Blob, reverse: bool) -> List[bytes]:
    records = []
    if b.legacy_shape:
        dims = (1,) * (4 - len(b.shape)) + tuple(b.shape)
        records += [(number, _scalar(number, "varint", dim)) for number, dim in zip(BLOB_LEGACY_SHAPE.values(), dims)]
    else:
        dims = b"".join(_varint(dim) for dim in b.shape)
        records.append((BLOB_SHAPE, _delimited(BLOB_SHAPE, _delimited(SHAPE_DIM, [dims]) if b.shape else [])))
    number, dtype, wire_type = (BLOB_DOUBLE_DATA, "<f8", 1) if b.double else (BLOB_DATA, "<f4", 5)
    values = np.ascontiguousarray(np.asarray(b.values).ravel(), dtype=dtype)
    if b.packed:
        for part in np.array_split(values, b.records):
            records.append((number, _delimited(number, [part.tobytes()])))
    else:
        key = _key(number, wire_type)
        records.append((number, [key + value.tobytes() for value in values]))
    return _in_order(records, reverse)


def _layer(layer: Layer, v1: bool, reverse: bool) -> List[bytes]:
    kind = "V1LayerParameter" if v1 else "LayerParameter"
    values = {"name": layer.name, "type": V1_LAYER_TYPES[layer.type] if v1 else layer.type,
              "bottom": list(layer.bottoms), "top": list(layer.tops)}
    if layer.type == "Data":
        values.update(DATA_LAYER)
    settings = dict(layer.settings)
    if layer.blobs:
        settings.update(FILLERS if layer.parameter else {})
        if v1:
            values["blobs_lr"] = [spec["lr_mult"] for spec in LEARNING]
            values["weight_decay"] = [spec["decay_mult"] for spec in LEARNING]
        else:
            values["param"] = list(LEARNING)
    if layer.parameter:
        values[layer.parameter] = settings
    records = [(MESSAGES[kind][name][0], _message(kind, {name: value}, reverse)) for name, value in values.items()]
    number = MESSAGES[kind]["blobs"][0]
    records += [(number, _delimited(number, _blob(b, reverse))) for b in layer.blobs]
    return _in_order(records, reverse)


def encode(net: Net, shuffle_fields: bool = False) -> List[bytes]:
    """``net`` as a NetParameter's bytes, in pieces; ``shuffle_fields``: every message's fields
    in reverse order of their numbers."""
    records = [(1, _scalar(1, "string", net.name))] if net.name else []
    for field_name, v1 in (("layers", True), ("layer", False)):
        number = MESSAGES["NetParameter"][field_name][0]
        records += [(number, _delimited(number, _layer(layer, v1, shuffle_fields)))
                    for layer in getattr(net, field_name)]
    return _in_order(records, shuffle_fields)


def serialize(net: Net, shuffle_fields: bool = False) -> bytes:
    return b"".join(encode(net, shuffle_fields))


def save(net: Net, path, shuffle_fields: bool = False) -> Path:
    with open(path, "wb") as out:
        out.writelines(encode(net, shuffle_fields))
    return Path(path)


def write_caffemodel(path, state: Optional[Mapping] = None, *, format: str = "V2", legacy_shapes: bool = False,
                     caffenet: bool = False, with_data_and_loss: bool = True, num_classes: int = 1000,
                     shuffle_fields: bool = False, packed: bool = True) -> Path:
    """Writes ``state`` (default: ``random_state(num_classes)``) as a .caffemodel at ``path``."""
    if state is None:
        state = random_state(num_classes)
    net = build_net(state, format=format, legacy_shapes=legacy_shapes, caffenet=caffenet,
                    with_data_and_loss=with_data_and_loss, packed=packed)
    return save(net, path, shuffle_fields=shuffle_fields)


def blob_bytes(b: Blob) -> bytes:
    """One serialized BlobProto."""
    return b"".join(_blob(b, reverse=False))


def write_binaryproto(path, array, *, legacy_shapes: bool = True, packed: bool = True) -> Path:
    """``array`` as a .binaryproto at ``path``: one serialized BlobProto, as Caffe's
    compute_image_mean writes its mean image (1 x 3 x H x W in B, G, R order, the shape in the
    legacy num/channels/height/width; ``legacy_shapes=False``: in BlobShape)."""
    Path(path).write_bytes(blob_bytes(blob(array, legacy_shapes, packed)))
    return Path(path)
