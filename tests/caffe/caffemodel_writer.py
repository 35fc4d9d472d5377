"""Writes .caffemodel files for the tests, with this package's own schema (alexnet.caffe.schema),
in the layout of Caffe's bvlc_alexnet (or, with ``caffenet=True``, bvlc_reference_caffenet:
each pool before its norm): data, conv1, relu1, norm1, pool1, conv2, ..., fc8, loss; and
.binaryproto mean files (``write_binaryproto``).

The layer parameters are Caffe's (deploy.prototxt of both models): LRN local_size 5, alpha 1e-4,
beta 0.75 (k left to its default, 1); max pooling 3/2; dropout 0.5; conv2, conv4, conv5 in 2
groups. Blobs are written as Caffe holds them: conv1's input channels in BGR order.

Any shapes work (the tests use tiny ones): num_output is taken from the arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from alexnet.caffe import schema
from alexnet.model.spec import resolve
from alexnet.model.state import canonical_shapes

V1_NUMBERS = {name: number for number, name in schema.V1_TYPES.items()}
LRN = ("lrn_param", {"local_size": 5, "alpha": 1e-4, "beta": 0.75})
MAX_POOL = ("pooling_param", {"pool": 0, "kernel_size": 3, "stride": 2})
DROPOUT = ("dropout_param", {"dropout_ratio": 0.5})
#: conv layer -> (kernel, stride, pad, group), as in bvlc_alexnet
CONVS = {"conv1": (11, 4, 0, 1), "conv2": (5, 1, 2, 2), "conv3": (3, 1, 1, 1), "conv4": (3, 1, 1, 2),
         "conv5": (3, 1, 1, 2)}


def random_state(num_classes: int = 1000, seed: int = 0, scale: float = 0.01) -> dict:
    """A canonical state dict of float32 numpy arrays (normal, ``scale`` std) of the paper's net."""
    rng = np.random.default_rng(seed)
    return {key: rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
            for key, shape in canonical_shapes(resolve(num_classes=num_classes)).items()}


def layer_table(caffenet: bool = False, with_data_and_loss: bool = True):
    """(name, type, bottoms, tops, (param field, values) or None) for every layer, in order."""
    rows = [("data", "Data", (), ("data", "label"), None)] if with_data_and_loss else []
    below = "data"
    for conv in CONVS:
        kernel, stride, pad, group = CONVS[conv]
        rows.append((conv, "Convolution", (below,), (conv,),
                     ("convolution_param", {"kernel_size": kernel, "stride": stride, "pad": pad, "group": group})))
        n = conv[-1]
        rows.append((f"relu{n}", "ReLU", (conv,), (conv,), None))
        below = conv
        blocks = {"1": ("norm", "pool"), "2": ("norm", "pool"), "5": ("pool",)}.get(n, ())
        for op in (reversed(blocks) if caffenet else blocks):
            rows.append((f"{op}{n}", "LRN" if op == "norm" else "Pooling", (below,), (f"{op}{n}",),
                         LRN if op == "norm" else MAX_POOL))
            below = f"{op}{n}"
    for fc in ("fc6", "fc7", "fc8"):
        rows.append((fc, "InnerProduct", (below,), (fc,), ("inner_product_param", {})))
        below = fc
        if fc != "fc8":
            n = fc[-1]
            rows += [(f"relu{n}", "ReLU", (fc,), (fc,), None), (f"drop{n}", "Dropout", (fc,), (fc,), DROPOUT)]
    if with_data_and_loss:
        rows.append(("loss", "SoftmaxWithLoss", ("fc8", "label"), ("loss",), None))
    return rows


def build_net(state: Mapping, *, format: str = "V2", legacy_shapes: bool = False, caffenet: bool = False,
              with_data_and_loss: bool = True, packed: bool = True):
    """The NetParameter message of ``state`` (canonical names; numpy arrays or tensors)."""
    net = schema.NetParameter(name="CaffeNet" if caffenet else "AlexNet")
    for name, kind, bottoms, tops, param in layer_table(caffenet, with_data_and_loss):
        layer = net.layers.add(type=V1_NUMBERS[kind]) if format == "V1" else net.layer.add(type=kind)
        layer.name = name
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        if f"{name}.weight" in state:
            weight, bias = (np.asarray(state[f"{name}.{part}"], np.float32) for part in ("weight", "bias"))
            if name == "conv1":
                weight = weight[:, ::-1]  # RGB -> Caffe's BGR
            param = (param[0], dict(param[1], num_output=weight.shape[0]))
            for array in (weight, bias):
                fill_blob(layer.blobs.add(), array, legacy_shapes, packed)
        if param:
            _set_fields(getattr(layer, param[0]), param[1])
    return net


def _set_fields(message, values: dict) -> None:
    for key, value in values.items():
        if message.DESCRIPTOR.fields_by_name[key].is_repeated:
            getattr(message, key).append(value)
        else:
            setattr(message, key, value)


def fill_blob(blob, array: np.ndarray, legacy_shapes: bool = False, packed: bool = True) -> None:
    """``array`` into ``blob``: shape in BlobShape (7) or legacy num/channels/height/width
    padded with leading 1s (1-4); values packed (one record) or unpacked (one per value)."""
    if legacy_shapes:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    values = np.ascontiguousarray(array, dtype="<f4").ravel()
    if packed:
        blob.data.append(values.tobytes())  # a packed repeated float is this one record
    else:
        blob.MergeFromString(UnpackedValues(data=values.tolist()).SerializeToString())


def _unpacked_values_class():
    """BlobValues without ``packed``: proto2 then writes one fixed32 record per float."""
    proto = schema.file_descriptor()
    for message in proto.message_type:
        if message.name == "BlobValues":
            for field in message.field:
                field.options.ClearField("packed")
    return schema.message_classes(proto)["BlobValues"]


UnpackedValues = _unpacked_values_class()


def reversed_fields(message) -> bytes:
    """``message``'s bytes with its fields in reverse order of their numbers, nested messages
    too (a repeated field's elements stay in order): valid protobuf that no protobuf writer
    produces. Each record is serialized alone; a nested message's tag and length are cut from
    its record written the usual way (same fields, so the same length)."""
    records = []
    for field, value in message.ListFields():
        items = list(value) if field.is_repeated else [value]
        if field.type != field.TYPE_MESSAGE:
            holder = type(message)()
            if field.is_repeated:
                getattr(holder, field.name).extend(items)
            else:
                setattr(holder, field.name, value)
            records.append(holder.SerializeToString())
            continue
        parts = []
        for item in items:
            holder = type(message)()
            (getattr(holder, field.name).add() if field.is_repeated else getattr(holder, field.name)).CopyFrom(item)
            whole, inner, shuffled = holder.SerializeToString(), item.SerializeToString(), reversed_fields(item)
            assert len(shuffled) == len(inner)
            parts.append(whole[:len(whole) - len(inner)] + shuffled)
        records.append(b"".join(parts))
    records.append(_unknown_fields(message))
    return b"".join(reversed(records))


def _unknown_fields(message) -> bytes:
    """The records the schema does not know (unpacked floats), as the message keeps them."""
    rest = type(message)()
    rest.CopyFrom(message)
    for field, _ in rest.ListFields():
        rest.ClearField(field.name)
    return rest.SerializeToString()


def write_caffemodel(path, state: Optional[Mapping] = None, *, format: str = "V2", legacy_shapes: bool = False,
                     caffenet: bool = False, with_data_and_loss: bool = True, num_classes: int = 1000,
                     shuffle_fields: bool = False, packed: bool = True) -> Path:
    """Writes ``state`` (default: ``random_state(num_classes)``) as a .caffemodel at ``path``."""
    if state is None:
        state = random_state(num_classes)
    net = build_net(state, format=format, legacy_shapes=legacy_shapes, caffenet=caffenet,
                    with_data_and_loss=with_data_and_loss, packed=packed)
    save(net, path, shuffle_fields=shuffle_fields)
    return Path(path)


def save(net, path, shuffle_fields: bool = False) -> Path:
    data = reversed_fields(net) if shuffle_fields else net.SerializeToString()
    Path(path).write_bytes(data)
    return Path(path)


def write_binaryproto(path, array, *, legacy_shapes: bool = True, packed: bool = True) -> Path:
    """``array`` as a .binaryproto at ``path``: one serialized BlobProto, as Caffe's
    compute_image_mean writes its mean image (1 x 3 x H x W in B, G, R order, the shape in the
    legacy num/channels/height/width; ``legacy_shapes=False``: in BlobShape)."""
    blob = schema.BlobProto()
    fill_blob(blob, np.asarray(array, np.float32), legacy_shapes, packed)
    Path(path).write_bytes(blob.SerializeToString())
    return Path(path)
