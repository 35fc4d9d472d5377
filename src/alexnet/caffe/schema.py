"""The few messages of Caffe's ``NetParameter`` (a .caffemodel file) that AlexNet needs, built
in code with ``google.protobuf``: no .proto file, no generated module, a private descriptor pool.

The field numbers are Caffe's wire format (caffe.proto, proto2). Fields not declared here
(a solver's extras, other layers' parameters) are kept by the parser as unknown fields and
never looked at.

Two declarations differ from Caffe's on purpose, with the same bytes on the wire:

* ``BlobProto.data`` (5), ``diff`` (6), ``double_data`` (8) and ``double_diff`` (9) are
  ``repeated float``/``double [packed = true]`` in Caffe. A packed field is one length-delimited
  record, exactly like ``bytes``, so they are declared ``repeated bytes`` here: the parser hands
  back the raw little-endian values, which ``numpy.frombuffer`` reads without building a Python
  list of 60 million floats. (Repeated, because a writer may split a packed field into several
  records; they are concatenated.) A file that stores the values unpacked (one fixed32 record
  per value) leaves these fields empty and keeps the values as unknown fields;
  ``BlobValues`` below, with Caffe's own declaration, reads such a blob.
* Enums (V1 layer types, LRN's ``norm_region``, pooling's ``pool``) are declared ``int32``,
  the same varint on the wire: proto2 enums are closed, and a value this schema does not list
  would otherwise vanish into the unknown fields.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "alexnet_caffe"

#: message -> ((field, number, type, repeated, message type or None, default or None), ...)
MESSAGES = {
    "BlobShape": (("dim", 1, _F.TYPE_INT64, True, None, None),),
    "BlobProto": (
        ("num", 1, _F.TYPE_INT32, False, None, None), ("channels", 2, _F.TYPE_INT32, False, None, None),
        ("height", 3, _F.TYPE_INT32, False, None, None), ("width", 4, _F.TYPE_INT32, False, None, None),
        ("data", 5, _F.TYPE_BYTES, True, None, None), ("diff", 6, _F.TYPE_BYTES, True, None, None),
        ("shape", 7, _F.TYPE_MESSAGE, False, "BlobShape", None),
        ("double_data", 8, _F.TYPE_BYTES, True, None, None), ("double_diff", 9, _F.TYPE_BYTES, True, None, None),
    ),
    # Caffe's own declaration of the values, for blobs stored unpacked (see the module doc)
    "BlobValues": (("data", 5, _F.TYPE_FLOAT, True, None, None), ("double_data", 8, _F.TYPE_DOUBLE, True, None, None)),
    "ConvolutionParameter": (
        ("num_output", 1, _F.TYPE_UINT32, False, None, None), ("bias_term", 2, _F.TYPE_BOOL, False, None, "true"),
        # repeated in newer Caffe; a single uint32 in older files: the same varint on the wire
        ("pad", 3, _F.TYPE_UINT32, True, None, None), ("kernel_size", 4, _F.TYPE_UINT32, True, None, None),
        ("group", 5, _F.TYPE_UINT32, False, None, "1"), ("stride", 6, _F.TYPE_UINT32, True, None, None),
    ),
    "LRNParameter": (
        ("local_size", 1, _F.TYPE_UINT32, False, None, "5"), ("alpha", 2, _F.TYPE_FLOAT, False, None, "1"),
        ("beta", 3, _F.TYPE_FLOAT, False, None, "0.75"),
        ("norm_region", 4, _F.TYPE_INT32, False, None, "0"),  # ACROSS_CHANNELS=0, WITHIN_CHANNEL=1
        ("k", 5, _F.TYPE_FLOAT, False, None, "1"),
    ),
    "PoolingParameter": (
        ("pool", 1, _F.TYPE_INT32, False, None, "0"),  # MAX=0, AVE=1
        ("kernel_size", 2, _F.TYPE_UINT32, False, None, None), ("stride", 3, _F.TYPE_UINT32, False, None, "1"),
        ("pad", 4, _F.TYPE_UINT32, False, None, "0"),
    ),
    "InnerProductParameter": (
        ("num_output", 1, _F.TYPE_UINT32, False, None, None), ("bias_term", 2, _F.TYPE_BOOL, False, None, "true"),
    ),
    "DropoutParameter": (("dropout_ratio", 1, _F.TYPE_FLOAT, False, None, "0.5"),),
    # the current format (NetParameter.layer, 100): types are strings ("Convolution", ...)
    "LayerParameter": (
        ("name", 1, _F.TYPE_STRING, False, None, None), ("type", 2, _F.TYPE_STRING, False, None, None),
        ("bottom", 3, _F.TYPE_STRING, True, None, None), ("top", 4, _F.TYPE_STRING, True, None, None),
        ("blobs", 7, _F.TYPE_MESSAGE, True, "BlobProto", None),
        ("convolution_param", 106, _F.TYPE_MESSAGE, False, "ConvolutionParameter", None),
        ("dropout_param", 108, _F.TYPE_MESSAGE, False, "DropoutParameter", None),
        ("inner_product_param", 117, _F.TYPE_MESSAGE, False, "InnerProductParameter", None),
        ("lrn_param", 118, _F.TYPE_MESSAGE, False, "LRNParameter", None),
        ("pooling_param", 121, _F.TYPE_MESSAGE, False, "PoolingParameter", None),
    ),
    # the old format (NetParameter.layers, 2) of the 2014 model zoo: types are numbers (V1_TYPES)
    "V1LayerParameter": (
        ("bottom", 2, _F.TYPE_STRING, True, None, None), ("top", 3, _F.TYPE_STRING, True, None, None),
        ("name", 4, _F.TYPE_STRING, False, None, None), ("type", 5, _F.TYPE_INT32, False, None, None),
        ("blobs", 6, _F.TYPE_MESSAGE, True, "BlobProto", None),
        ("convolution_param", 10, _F.TYPE_MESSAGE, False, "ConvolutionParameter", None),
        ("dropout_param", 12, _F.TYPE_MESSAGE, False, "DropoutParameter", None),
        ("inner_product_param", 17, _F.TYPE_MESSAGE, False, "InnerProductParameter", None),
        ("lrn_param", 18, _F.TYPE_MESSAGE, False, "LRNParameter", None),
        ("pooling_param", 19, _F.TYPE_MESSAGE, False, "PoolingParameter", None),
    ),
    "NetParameter": (
        ("name", 1, _F.TYPE_STRING, False, None, None),
        ("layers", 2, _F.TYPE_MESSAGE, True, "V1LayerParameter", None),
        ("layer", 100, _F.TYPE_MESSAGE, True, "LayerParameter", None),
    ),
}

#: V1LayerParameter.type (an enum in caffe.proto) -> the type's name in the current format.
V1_TYPES = {
    1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 7: "EuclideanLoss",
    9: "HDF5Data", 12: "ImageData", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 24: "WindowData", 29: "MemoryData",
}
NORM_REGIONS = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}
POOL_METHODS = {0: "MAX", 1: "AVE"}


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema as a FileDescriptorProto (proto2), from ``MESSAGES``."""
    proto = descriptor_pb2.FileDescriptorProto(name="alexnet_caffe.proto", package=PACKAGE, syntax="proto2")
    for message, fields in MESSAGES.items():
        out = proto.message_type.add(name=message)
        for name, number, kind, repeated, type_name, default in fields:
            field = out.field.add(name=name, number=number, type=kind,
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
            if default is not None:
                field.default_value = default
    values = next(m for m in proto.message_type if m.name == "BlobValues")
    for field in values.field:
        field.options.packed = True  # as caffe.proto declares them
    return proto


def message_classes(proto: descriptor_pb2.FileDescriptorProto) -> dict:
    """name -> message class, for every message of ``proto``, in a pool of their own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{m.name}"))
            for m in proto.message_type}


_CLASSES = message_classes(file_descriptor())
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
V1LayerParameter = _CLASSES["V1LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobValues = _CLASSES["BlobValues"]
