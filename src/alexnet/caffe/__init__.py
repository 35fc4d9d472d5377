"""Caffe's AlexNet and CaffeNet weights (.caffemodel files): reading them (``read``, ``schema``),
mapping them onto the canonical state dict, and importing them as this package's checkpoints
(``importer``: ``alexnet import-caffe``)."""

from .importer import import_caffemodel, open_caffemodel
from .read import CaffeLayer, CaffeNet, read_binaryproto, read_caffemodel, to_canonical

__all__ = ["CaffeLayer", "CaffeNet", "import_caffemodel", "open_caffemodel", "read_binaryproto", "read_caffemodel",
           "to_canonical"]
