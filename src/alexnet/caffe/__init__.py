"""Caffe's AlexNet and CaffeNet weights (.caffemodel files): reading them and mapping them onto
the canonical state dict."""

from .read import CaffeLayer, CaffeNet, read_binaryproto, read_caffemodel, to_canonical

__all__ = ["CaffeLayer", "CaffeNet", "read_binaryproto", "read_caffemodel", "to_canonical"]
