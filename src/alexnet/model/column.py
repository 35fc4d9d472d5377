"""A column of the network: the layers of one tower, or of both towers side by side.

The two-tower net has one column per tower (each holding its half of every split layer);
the grouped net is a single column holding both halves, with ``groups=2`` wherever a layer
reads only its own tower. Both are built here from the same resolved layer table and run
each block with the same code, so the two layouts cannot drift apart.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .dropout import dropout_layer
from ..ops.fast_lrn import fusable, relu_lrn_maxpool
from ..ops.tracing import exporting
from .lrn import LocalResponseNorm, SpatialResponseNorm
from .spec import (CAFFE_LRN_K, CROP, HALO, INPUT_SIZES, PADDED_CROP, RELU_LRN_POOL, NetSpec, ResolvedLayer,
                   op_module)


def prepare_input(x: torch.Tensor, channels_last: bool = False, spec: Optional[NetSpec] = None) -> torch.Tensor:
    """Check a batch of crops and pad a 224 crop to 227 the way cuda-convnet reads it.

    cuda-convnet rounds conv1's output size up ((224-11)/4+1 = 54.25 -> 55) and reads the
    pixels past the right and bottom edges as zero, so a 224 crop acts exactly as a 227
    input with 3 zero columns and rows (after mean subtraction). A 227 crop passes as is.
    ``channels_last``: return the batch in that memory format (the CPU path, see
    ``Column.block``), padding straight into it instead of padding and then converting
    (except while exporting, where the padding is one ``Pad``).
    ``spec``: the net; Caffe's nets also take any other square size that their ceil-rounded
    pooling brings to 6x6 at pool5 (``NetSpec.accepts``), as Caffe would.
    """
    square = x.dim() == 4 and x.shape[1] == 3 and x.shape[2] == x.shape[3]
    if square and x.shape[2] not in INPUT_SIZES and spec is not None and spec.accepts(x.shape[2]):
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if not square or x.shape[2] not in INPUT_SIZES:
        raise InputError(
            "AlexNet takes a batch of RGB crops shaped (N, 3, 224, 224) or (N, 3, 227, 227); "
            f"got {tuple(x.shape)}"
        )
    if x.shape[-1] == CROP:
        if channels_last and not exporting():
            # Straight into a channels-last buffer: one pass instead of a pad and a conversion.
            # An exported graph takes the F.pad below instead, one Pad node: this buffer, filled
            # slice by slice, would trace as shape arithmetic and scatters for a fixed size.
            padded = torch.empty((x.shape[0], 3, PADDED_CROP, PADDED_CROP), dtype=x.dtype, device=x.device,
                                 memory_format=torch.channels_last)
            padded[:, :, CROP:].zero_()  # zeros at the bottom
            padded[:, :, :CROP, CROP:].zero_()  # and at the right
            padded[:, :, :CROP, :CROP] = x
            return padded
        pad = PADDED_CROP - CROP
        x = F.pad(x, (0, pad, 0, pad))  # (N, 3, 227, 227): zeros at the right and bottom
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


#: The blocks ``relu_lrn_maxpool`` runs in one pass: the paper's conv1 and conv2.
FUSABLE = RELU_LRN_POOL


class Column(nn.Module):
    """The layers of ``share`` towers out of ``spec.towers``, on one device.

    ``share == spec.towers``: the whole net on one device (the grouped layout).
    ``share == 1`` with two towers: one tower of the two-tower net.
    Modules are named after the paper: conv1, lrn1, pool1, ..., fc7, drop7 (and the authors'
    cnorm2 in their form of the blocks).

    ``fuse_relu_lrn_pool``: with the fast LRN on the CPU, blocks 1 and 2 run ReLU, LRN and
    max-pooling as one function (``alexnet.ops.fast_lrn.relu_lrn_maxpool``: the same values, a
    fraction of the memory), so the lrn and pool modules' own forward (and hooks on them) are
    not called there; False calls every module, one after the other.
    """

    def __init__(self, spec: NetSpec, share: int, layers: Iterable[ResolvedLayer], device=None,
                 lrn_impl: str = "fast", fuse_relu_lrn_pool: bool = True):
        super().__init__()
        self.spec, self.share = spec, share
        self.fuse_relu_lrn_pool = fuse_relu_lrn_pool
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.layers = tuple(layers)
        pool_kernel, pool_stride = spec.pool
        for layer in self.layers:
            row = layer.layer
            # A split layer keeps `share` of its towers' halves here; fc8 is never split.
            out_channels = layer.out_channels * share // spec.towers if row.split else layer.out_channels
            if row.reads == "own":
                # Reads only its own tower's maps: one group per tower in this column.
                in_channels, groups = layer.in_channels * share // spec.towers, share
            else:
                # The image, or both towers' maps after an exchange: dense.
                in_channels, groups = layer.in_channels, 1
            if row.kind == "conv":
                module = nn.Conv2d(in_channels, out_channels, row.kernel, row.stride, layer.pad,
                                   groups=groups, device=self.device)
            else:
                module = nn.Linear(in_channels, out_channels, device=self.device)
            self.add_module(layer.name, module)
            for op in layer.ops:
                if op == "lrn":
                    self.add_module(op_module(layer.name, op), LocalResponseNorm(out_channels, groups=share, impl=lrn_impl))
                elif op == "clrn":
                    # Caffe's: across every map of the layer; one tower of two reads HALO more maps of
                    # its neighbour's (TowersAlexNet's lrn exchange), the grouped net has them all.
                    halo = HALO if share < spec.towers else 0
                    self.add_module(op_module(layer.name, op), LocalResponseNorm(out_channels + halo, groups=1, k=CAFFE_LRN_K,
                                                                 impl=lrn_impl))
                elif op == "cnorm":
                    self.add_module(op_module(layer.name, op), SpatialResponseNorm())
                elif op == "pool":
                    self.add_module(op_module(layer.name, op), nn.MaxPool2d(pool_kernel, pool_stride, ceil_mode=spec.pool_ceil))
                elif op == "dropout":
                    # §4.2's form (PaperDropout) or nn.Dropout's inverted one, as the spec says.
                    self.add_module(op_module(layer.name, op), dropout_layer(spec.config.dropout, spec.config.dropout_style))

    def block(self, layer: ResolvedLayer, x: torch.Tensor) -> torch.Tensor:
        """One block: the layer, then its ops in the table's order (§3.5: ReLU -> LRN -> max-pool
        -> dropout; the authors' and Caffe's forms: see ``spec.Layer``)."""
        x = self.apply_layer(layer, x)
        if self.fuse_relu_lrn_pool and layer.ops == FUSABLE:
            lrn_module, pool = getattr(self, op_module(layer.name, "lrn")), getattr(self, op_module(layer.name, "pool"))
            if fusable(x, lrn_module, pool):
                # ReLU -> LRN -> max-pool as one pass over the batch, in the cache (lrn.py).
                return relu_lrn_maxpool(x, lrn_module, pool)
        return self.apply_ops(layer, x, layer.ops)

    def apply_ops(self, layer: ResolvedLayer, x: torch.Tensor, ops) -> torch.Tensor:
        """``ops`` of the layer's block (a part of ``layer.ops``), in order."""
        for op in ops:
            if op == "relu":
                x = F.relu(x, inplace=True)  # the conv/fc output is not needed for its backward
            else:
                x = getattr(self, op_module(layer.name, op))(x)
        return x

    def apply_layer(self, layer: ResolvedLayer, x: torch.Tensor) -> torch.Tensor:
        """The conv or FC layer itself."""
        row = layer.layer
        if row.kind == "fc" and x.dim() > 2:
            x = torch.flatten(x, 1)  # (N, C, 6, 6) -> (N, C·36), channel-major as in the grouped net
        if row.reads == "image" and x.device.type == "cpu":
            # On the CPU the conv layers run channels-last (NHWC): PyTorch's CPU max-pooling is
            # several times faster in it, and mkldnn's convolutions and the LRN's passes are no
            # slower. Every later op keeps the format; the function is the same (up to float
            # rounding in the convolutions). The models hand over the image in this format
            # already when they run on the CPU, so this is then a no-op.
            x = x.contiguous(memory_format=torch.channels_last)
        return getattr(self, layer.name)(x)
