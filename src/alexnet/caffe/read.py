"""Reading Caffe's binary ``NetParameter`` (.caffemodel) files of AlexNet and CaffeNet, and
mapping their weights onto this package's canonical state dict.

``read_caffemodel(path)`` returns the file's layers as they are (names, types, bottoms and
tops, parameters, blobs as float32 arrays); ``to_canonical(net, path)`` checks them against
the paper's net and returns ``conv1.weight`` ... ``fc8.bias``; ``read_binaryproto(path)``
reads a file of one ``BlobProto`` (Caffe's mean image, ``ilsvrc_2012_mean.binaryproto``).
Nothing here writes a file.

Facts about Caffe's files used here (the field numbers are in ``schema``):

* Two formats: "V1" keeps the layers in ``NetParameter.layers`` (2), with numeric types
  (bvlc_reference_caffenet and bvlc_alexnet of the 2014 model zoo); "V2" in
  ``NetParameter.layer`` (100), with string types. A file has one or the other.
* A blob's shape is ``BlobProto.shape`` (7) where present, else the legacy num/channels/
  height/width (1-4): conv weights out x in x k x k, FC weights 1 x 1 x out x in, biases
  1 x 1 x 1 x N.
* Grouped convolutions (conv2, conv4, conv5, ``group: 2``) store (out, in/2, k, k): the layout
  of the canonical grouped net, with group g's kernels in rows [g*out/2, (g+1)*out/2).
* Caffe's images are BGR, so conv1's three input channels are blue, green, red.
* A ``.binaryproto`` mean file is one serialized ``BlobProto``: 1 x 3 x 256 x 256 in the legacy
  fields, channels B, G, R, computed over the training images warped to 256x256.
"""

from __future__ import annotations

import codecs
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from google.protobuf.message import DecodeError

from ..errors import CaffeModelError
from ..files import describe_os_error
from ..model.spec import LAYERS, resolve
from ..model.state import canonical_shapes
from .schema import NORM_REGIONS, POOL_METHODS, V1_TYPES, BlobProto, BlobValues, NetParameter

#: Layer types that feed data in or score the output: read, reported, never mapped.
DATA_AND_LOSS = ("Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "Input", "DummyData",
                 "SoftmaxWithLoss", "EuclideanLoss", "Accuracy", "Softmax")
#: The first bytes of files taken for a caffemodel by mistake, and what they are.
MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
         b"PK\x03\x04": "a zip archive (a PyTorch checkpoint?)", b"\x1f\x8b": "a gzip file",
         b"\x89HDF": "an HDF5 file (Caffe's .caffemodel.h5 format is not read)", b"\x93NUMPY": "a NumPy array"}
#: How a NetParameter's bytes begin: field 1 (name), 2 (layers) or 100 (layer), length-delimited.
CAFFE_STARTS = (b"\x0a", b"\x12", b"\xa2\x06")
#: How Caffe's BlobProto's bytes begin: field 1 (num, a varint), 5 (data) or 7 (shape).
BLOB_STARTS = (b"\x08", b"\x2a", b"\x3a")


@dataclass
class CaffeLayer:
    """One layer of a .caffemodel, as the file has it.

    ``blobs``: float32 arrays, read-only views of the file's values (weights first, then
    biases). ``params``: the type's parameters (Convolution: num_output, kernel, stride, pad,
    group, bias_term; InnerProduct: num_output, bias_term; LRN: local_size, alpha, beta, k,
    norm_region; Pooling: pool, kernel, stride, pad; Dropout: dropout_ratio), Caffe's
    defaults where the file leaves one out; empty for other types.
    """

    name: str
    type: str
    bottoms: Tuple[str, ...]
    tops: Tuple[str, ...]
    blobs: List[np.ndarray] = field(default_factory=list)
    params: Dict[str, object] = field(default_factory=dict)


@dataclass
class CaffeNet:
    name: str
    format: str  # "V1" (NetParameter.layers, numeric types) or "V2" (NetParameter.layer)
    layers: List[CaffeLayer]

    def __getitem__(self, name: str) -> CaffeLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def read_caffemodel(path) -> CaffeNet:
    """The layers of the binary .caffemodel at ``path``, in the file's order.

    Peak memory is about twice the file: its bytes while the parser copies them, then the
    parsed message while the blobs are copied out of it.
    """
    message = _parse(path)
    if len(message.layer) and len(message.layers):
        raise CaffeModelError(f"{path}: both the V1 (layers) and the current (layer) lists of layers are "
                              f"filled; Caffe itself refuses such a file")
    layers, form = (message.layer, "V2") if len(message.layer) else (message.layers, "V1")
    if not len(layers):
        raise CaffeModelError(f"{path}: not a caffemodel ({_looks_like(path) or 'a protobuf message without layers'})")
    net = CaffeNet(name=message.name, format=form, layers=[])
    for layer in layers:
        kind = layer.type if form == "V2" else V1_TYPES.get(layer.type, f"V1 type {layer.type}")
        where = f"{path}: layer {layer.name!r}"
        net.layers.append(CaffeLayer(
            name=layer.name, type=kind, bottoms=tuple(layer.bottom), tops=tuple(layer.top),
            blobs=[_blob(blob, kind, index, where) for index, blob in enumerate(layer.blobs)],
            params=_params(layer, kind)))
    return net


def _read(path, what: str) -> bytes:
    """The file's bytes; a file that cannot be read, or is empty, is one line naming it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CaffeModelError(f"{path}: cannot read the file ({describe_os_error(error)})") from None
    if not data:
        raise CaffeModelError(f"{path}: empty file (0 bytes), not {what}")
    return data


def _parse(path):
    """The file's NetParameter; its bytes are freed on return."""
    data = _read(path, "a caffemodel")
    message = NetParameter()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        what = _looks_like(path, data[:512])
        if what or not data.startswith(CAFFE_STARTS):
            what = what or "its bytes are no protobuf message"
            raise CaffeModelError(f"{path}: not a caffemodel ({what})") from None
        reason = " ".join(str(error).split()).rsplit(": ", 1)[-1]  # upb: "Error parsing message ...: <reason>"
        raise CaffeModelError(f"{path}: truncated or corrupt caffemodel ({len(data)} bytes; protobuf: "
                              f"{reason})") from None
    return message


def read_binaryproto(path) -> np.ndarray:
    """The one blob of a ``.binaryproto`` file as float32, in its own shape (the legacy
    num/channels/height/width: all four). A file that is no BlobProto, or whose values do
    not fill its shape, is one line naming it."""
    data = _read(path, "a .binaryproto file")
    blob = BlobProto()
    try:
        blob.ParseFromString(data)
        legacy = (blob.num, blob.channels, blob.height, blob.width)
        shape = tuple(int(d) for d in blob.shape.dim) if blob.HasField("shape") else legacy if any(legacy) else ()
    except DecodeError:
        if data[:1] in BLOB_STARTS:
            raise CaffeModelError(f"{path}: truncated or corrupt .binaryproto ({len(data)} bytes)") from None
        shape = ()
    values = _values(blob, str(path)) if shape and 0 not in shape else np.zeros(0, np.float32)
    if not values.size:
        # another protobuf parses as a BlobProto without a blob: its fields are others' numbers
        what = _looks_like(path, data[:512]) or ("a caffemodel?" if data.startswith(CAFFE_STARTS) else "")
        raise CaffeModelError(f"{path}: not a Caffe .binaryproto (one serialized BlobProto with its values, "
                              f"such as ilsvrc_2012_mean.binaryproto){f'; it looks like {what}' if what else ''}")
    return _shaped(values, shape, f"{path}: the blob")


def _looks_like(path, head: bytes = b"") -> str:
    """What a file that is no caffemodel seems to be, from its first bytes ('' if unknown)."""
    if not head:
        with open(path, "rb") as handle:
            head = handle.read(512)
    for magic, what in MAGIC.items():
        if head.startswith(magic):
            return what
    try:  # (incremental: a character cut at the end of the 512 bytes is no error)
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "a text file; a .prototxt describes a net but holds no weights"
    return ""


def _blob(blob, layer_type: str, index: int, where: str) -> np.ndarray:
    """A BlobProto's values as a float32 array of its shape."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = _legacy_shape((blob.num, blob.channels, blob.height, blob.width), layer_type, index)
    return _shaped(_values(blob, where), shape, f"{where}: blob {index}")


def _shaped(values: np.ndarray, shape: Tuple[int, ...], what: str) -> np.ndarray:
    """``values`` in ``shape``, or one line: a dimension below 1, or a shape the values do not
    fill (its size counted exactly, so dimensions whose product overflows 64 bits say so too)."""
    if any(d < 1 for d in shape):
        raise CaffeModelError(f"{what} has the shape {shape}: every dimension must be at least 1; the file is damaged")
    count = math.prod(shape)
    if values.size != count:
        raise CaffeModelError(f"{what} holds {values.size:,} values, its shape {shape} needs {count:,}; the file is "
                              f"damaged")
    return values.reshape(shape)


def _legacy_shape(dims: Tuple[int, int, int, int], layer_type: str, index: int) -> Tuple[int, ...]:
    """num x channels x height x width without the leading 1s of Caffe's legacy layouts:
    biases 1 x 1 x 1 x N -> (N,); InnerProduct weights 1 x 1 x out x in -> (out, in)."""
    keep = 1 if index == 1 else 2 if layer_type == "InnerProduct" else 4
    lead = dims[:4 - keep]
    return tuple(dims[4 - keep:]) if all(d == 1 for d in lead) else tuple(dims)


def _values(blob, where: str) -> np.ndarray:
    """``data`` (5) as float32, else ``double_data`` (8) converted; read as bytes (see schema).
    Values stored unpacked are unknown fields to the bytes schema: then the blob is parsed
    again with Caffe's ``repeated float`` declaration."""
    for chunks, dtype in ((blob.data, "<f4"), (blob.double_data, "<f8")):
        if len(chunks):
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if len(data) % np.dtype(dtype).itemsize:
                raise CaffeModelError(f"{where}: a blob of {len(data):,} bytes, not a whole number of "
                                      f"{np.dtype(dtype).itemsize}-byte values; the file is damaged")
            return np.frombuffer(data, dtype).astype(np.float32, copy=False)
    values = BlobValues.FromString(blob.SerializeToString())
    for numbers, dtype in ((values.data, np.float32), (values.double_data, np.float64)):
        if len(numbers):
            return np.fromiter(numbers, dtype, count=len(numbers)).astype(np.float32, copy=False)
    return np.zeros(0, np.float32)


def _params(layer, kind: str) -> Dict[str, object]:
    """The parameters of the layer's type (Caffe's defaults for fields the file omits)."""
    if kind == "Convolution":
        p = layer.convolution_param
        return {"num_output": p.num_output, "kernel": _one(p.kernel_size, 0), "stride": _one(p.stride, 1),
                "pad": _one(p.pad, 0), "group": p.group, "bias_term": p.bias_term}
    if kind == "InnerProduct":
        p = layer.inner_product_param
        return {"num_output": p.num_output, "bias_term": p.bias_term}
    if kind == "LRN":
        p = layer.lrn_param
        return {"local_size": p.local_size, "alpha": _f32(p.alpha), "beta": _f32(p.beta), "k": _f32(p.k),
                "norm_region": NORM_REGIONS.get(p.norm_region, str(p.norm_region))}
    if kind == "Pooling":
        p = layer.pooling_param
        return {"pool": POOL_METHODS.get(p.pool, str(p.pool)), "kernel": p.kernel_size, "stride": p.stride,
                "pad": p.pad}
    if kind == "Dropout":
        return {"dropout_ratio": _f32(layer.dropout_param.dropout_ratio)}
    return {}


def _one(values, default):
    """A repeated size field (one value per spatial axis, or one for all): an int if the axes
    agree, else the tuple."""
    values = tuple(values) or (default,)
    return values[0] if len(set(values)) == 1 else values


def _f32(value: float) -> float:
    """A float field as written (1e-4, not 9.999999747378752e-05): the shortest float32 repr."""
    return float(str(np.float32(value)))


#: The paper's layers with weights, in order, and the Caffe type of each.
PARAMETER_LAYERS = tuple((layer.name, "Convolution" if layer.kind == "conv" else "InnerProduct") for layer in LAYERS)


def to_canonical(net: CaffeNet, path) -> Tuple["OrderedDict[str, torch.Tensor]", dict]:
    """``net``'s weights as the canonical state dict (float32 tensors, copies), and what else
    the file says (``info``: num_classes, format, layout, order, lrn, pooling, dropout,
    skipped, names).

    The layers with weights are matched to conv1..conv5, fc6..fc8 by order, their names
    checked (a fine-tuned layer's suffix, as in ``fc8_flickr``, is allowed); the class count
    is fc8's weight rows; every shape, conv group, stride and pad must be the paper's net's.
    conv1's input channels are flipped from Caffe's BGR to RGB.
    """
    layers = _match(net, path)
    fc8 = layers["fc8"].blobs[0]
    if fc8.ndim != 2 or fc8.shape[0] < 1:
        raise CaffeModelError(f"{path}: fc8.weight: (classes, 4096) expected, got {tuple(fc8.shape)}")
    spec = resolve(num_classes=int(fc8.shape[0]))
    shapes = canonical_shapes(spec)
    state = OrderedDict()
    for resolved in spec.layers:
        layer = layers[resolved.name]
        for kind, blob in zip(("weight", "bias"), layer.blobs):
            key = f"{resolved.name}.{kind}"
            if blob.shape != shapes[key]:
                raise CaffeModelError(f"{path}: {key}: {shapes[key]} expected, got {tuple(blob.shape)}"
                                      f"{_group_hint(layer, resolved)}")
            if key == "conv1.weight":
                blob = blob[:, ::-1]  # BGR -> RGB
            state[key] = torch.from_numpy(np.array(blob, dtype=np.float32, order="C"))
        if resolved.layer.kind == "conv":
            _check_conv(layer, resolved, path)
    return state, _info(net, layers, int(fc8.shape[0]))


def _match(net: CaffeNet, path) -> Dict[str, CaffeLayer]:
    """Canonical layer name -> the file's layer with weights in its place."""
    found = [layer for layer in net.layers if layer.blobs]
    names = [layer.name for layer in found]
    listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "none"
    matched = {}
    for i, (expected, kind) in enumerate(PARAMETER_LAYERS):
        layer = found[i] if i < len(found) else None
        if layer is None or not _named(layer.name, expected):
            if layer is None or not any(_named(name, expected) for name in names):
                raise CaffeModelError(f"{path}: no {expected} (the layers with weights: {listed})")
            if layer is not None and any(_named(layer.name, other) for other, _ in PARAMETER_LAYERS):
                raise CaffeModelError(f"{path}: {layer.name!r} where {expected} belongs (the layers with weights: "
                                      f"{listed})")
            before = PARAMETER_LAYERS[i - 1][0] if i else "the input"
            raise CaffeModelError(f"{path}: an extra layer with weights, {layer.name!r} ({layer.type}), between "
                                  f"{before} and {expected}")
        if layer.type != kind:
            raise CaffeModelError(f"{path}: layer {layer.name!r} is {layer.type}; AlexNet's {expected} is {kind}")
        if len(layer.blobs) != 2:
            raise CaffeModelError(f"{path}: layer {layer.name!r} has {len(layer.blobs)} blob(s); AlexNet's layers "
                                  f"have 2 (weights, biases)")
        matched[expected] = layer
    if len(found) > len(PARAMETER_LAYERS):
        extra = found[len(PARAMETER_LAYERS)]
        raise CaffeModelError(f"{path}: an extra layer with weights, {extra.name!r} ({extra.type}), after fc8")
    return matched


def _named(name: str, expected: str) -> bool:
    return name == expected or name.startswith(expected + "_")


def _group_hint(layer: CaffeLayer, resolved) -> str:
    group = layer.params.get("group", 1)
    if resolved.layer.kind == "conv" and group != resolved.groups:
        return f" (the file's {layer.name} has group {group}; AlexNet's has group {resolved.groups})"
    return ""


def _check_conv(layer: CaffeLayer, resolved, path) -> None:
    p = layer.params
    want = {"group": resolved.groups, "stride": resolved.layer.stride, "pad": resolved.pad}
    got = {key: p[key] for key in want}
    if got != want:
        raise CaffeModelError(f"{path}: layer {layer.name!r} has {_words(got)}; AlexNet's {resolved.name} has "
                              f"{_words(want)}")


def _words(values: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def _info(net: CaffeNet, layers: Dict[str, CaffeLayer], num_classes: int) -> dict:
    """What the file says besides the weights, for the caller to compare with its own net."""
    kinds = [layer.type for layer in net.layers]
    norm = kinds.index("LRN") if "LRN" in kinds else None
    pool = kinds.index("Pooling") if "Pooling" in kinds else None
    if norm is None:
        layout = "no-lrn"
    else:
        layout = "alexnet" if pool is None or norm < pool else "caffenet"  # bvlc_alexnet: norm1, then pool1
    return {
        "num_classes": num_classes, "format": net.format, "name": net.name, "layout": layout,
        "order": [(layer.name, layer.type) for layer in net.layers],
        "lrn": _of_type(net, "LRN"), "pooling": _of_type(net, "Pooling"), "dropout": _of_type(net, "Dropout"),
        "skipped": [(layer.name, layer.type) for layer in net.layers if layer.type in DATA_AND_LOSS],
        "names": {canonical: layer.name for canonical, layer in layers.items()},
    }


def _of_type(net: CaffeNet, kind: str) -> List[dict]:
    return [dict(name=layer.name, **layer.params) for layer in net.layers if layer.type == kind]
