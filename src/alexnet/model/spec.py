"""The paper's architecture as data: one layer table, and the variants derived from it.

Every network in this package (the two-tower net, the grouped net, the paper's one-GPU
comparison net) is built from ``LAYERS`` below, and ``alexnet summary`` prints it back.
Numbers are from §3.5 and Figure 2 of Krizhevsky, Sutskever & Hinton (NIPS 2012); see
docs/faithfulness.md for the sources of each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .config import ModelConfig

#: Local response normalization (§3.3): b = a / (k + alpha/n * sum a_j^2)^beta over n maps.
#: ``alpha`` is the paper's α; the window sum is divided by n as in the authors' code and in
#: torch.nn.LocalResponseNorm (FACTS §2), so the kernel computes 2 + (1e-4/5)·Σa².
LRN_SIZE = 5  # n
LRN_ALPHA = 1e-4  # α
LRN_BETA = 0.75  # β
LRN_K = 2.0  # k

#: Pooling (§3.4): overlapping z=3, s=2; the ablation's non-overlapping z=2, s=2.
POOL_OVERLAP = (3, 2)
POOL_NON_OVERLAP = (2, 2)

#: The network reads 224x224 crops (§2). cuda-convnet rounds conv1's output size up and
#: reads pixels past the edge as zero, so a 224 crop acts as a 227 input with 3 zero rows
#: and columns at the bottom and right (FACTS §3). 227 crops (Caffe's choice) are accepted too.
CROP = 224
PADDED_CROP = 227
INPUT_SIZES = (CROP, PADDED_CROP)


#: What follows a conv or FC layer in its block, in order: "relu"; "lrn", the cross-map
#: response normalization of §3.3; "cnorm", the authors' spatial response normalization within
#: each map (``SPATIAL_NORM_*``, ``alexnet.model.lrn.SpatialResponseNorm``); "pool", max-pooling;
#: "dropout". A ModelConfig's ``blocks`` picks one of a row's two sequences, and ``lrn=False``
#: drops both normalizations (the authors' no-LRN net 148 has neither).
BLOCK_OPS = ("relu", "lrn", "clrn", "cnorm", "pool", "dropout")
NORMALIZATIONS = ("lrn", "clrn", "cnorm")

#: Caffe's LRN ("clrn"; bvlc_alexnet's norm1, norm2): the same window, α and β as §3.3 but
#: k = 1, and the window runs across all 96 (256) maps of the layer, over the boundary between
#: the towers. In the towers layout each tower receives the HALO maps at the other tower's edge
#: (an exchange point of its own, counted like the paper's four).
CAFFE_LRN_K = 1.0
HALO = LRN_SIZE // 2

#: The authors' spatial response normalization ``cnorm2`` (layers-145.cfg: ``type=rnorm``,
#: size 5, scale 0.001, pow 0.75): b = a / (1 + (scale/size²)·Σ a²)^pow over the size x size
#: window centred on each position of the same map, zeros past the edges. cuda-convnet's
#: layer.py divides the scale by size² (as it divides the cross-map norm's by size), and its
#: constant is 1 (the cross-map norm's ``minDiv=2`` is not set for this one).
SPATIAL_NORM_SIZE = 5
SPATIAL_NORM_SCALE = 1e-3
SPATIAL_NORM_POW = 0.75
SPATIAL_NORM_K = 1.0


@dataclass(frozen=True)
class Layer:
    """One row of the layer table: a conv or FC layer and what follows it in its block.

    ``paper`` is the block as §3.5 words it; ``authors`` as the authors' 2012 configuration
    (layers-145.cfg) ran it, where it differs: conv1's LRN normalizes the output before the
    ReLU (pool1 applies it), conv2's LRN is followed by ``cnorm2``, and conv5's ReLU is applied
    by pool5 (the same function: ReLU and max-pooling commute).
    """

    name: str  # the paper's name: conv1..conv5, fc6..fc8
    kind: str  # "conv" or "fc"
    filters: int  # kernels (conv) or neurons (fc), over both towers
    kernel: int = 0  # conv kernel size (square)
    stride: int = 1
    pad: int = 0
    reads: str = "own"  # "image": the input image; "own": own tower only; "both": both towers
    split: bool = True  # half of the layer in each tower; False: one layer on tower 0 (fc8)
    paper: Tuple[str, ...] = ("relu",)  # what follows the layer (BLOCK_OPS), as §3.5 says
    authors: Optional[Tuple[str, ...]] = None  # as layers-145.cfg has it, where it differs
    caffe: Optional[Tuple[str, ...]] = None  # as Caffe's bvlc_alexnet, where it differs
    caffenet: Optional[Tuple[str, ...]] = None  # as Caffe's CaffeNet (pool before norm), where it differs
    halved_in_one_gpu: bool = True  # §3.2 footnote: the one-GPU net halves conv1..conv4 only
    # net 147 (the authors' non-overlapping pooling, layers-147.cfg): conv2 padding 1, conv5 0
    authors_non_overlap_pad: Optional[int] = None

    @property
    def pool(self) -> bool:
        return "pool" in self.paper

    @property
    def lrn(self) -> bool:
        return "lrn" in self.paper

    def ops(self, blocks: str) -> Tuple[str, ...]:
        """The block's sequence in the ``blocks`` form (``config.BLOCKS``)."""
        own = getattr(self, blocks) if blocks != "paper" else None
        return own if own is not None else self.paper


RELU_LRN_POOL = ("relu", "lrn", "pool")

#: The module after layer N that runs each block op but the ReLU: lrn1, cnorm2, pool5, drop6.
MODULE_PREFIX = {"lrn": "lrn", "clrn": "lrn", "cnorm": "cnorm", "pool": "pool", "dropout": "drop"}


def op_module(layer: str, op: str) -> str:
    """The name of the module that runs ``op`` (``BLOCK_OPS`` but the ReLU) after ``layer``, the
    paper's way: ``op_module("conv1", "lrn")`` is "lrn1", ``op_module("fc6", "dropout")`` "drop6"."""
    return MODULE_PREFIX[op] + layer.lstrip("convfc")

#: Figure 2 of the paper, over both towers. `reads="both"` marks the four points where data
#: crosses between the towers (conv3, fc6, fc7, fc8).
LAYERS: Tuple[Layer, ...] = (
    #     name     kind    filters kernel stride pad  reads
    Layer("conv1", "conv", 96, 11, 4, 0, reads="image", paper=RELU_LRN_POOL, authors=("lrn", "pool", "relu"),
          caffe=("relu", "clrn", "pool"), caffenet=("relu", "pool", "clrn")),
    Layer("conv2", "conv", 256, 5, 1, 2, reads="own", paper=RELU_LRN_POOL,
          authors=("relu", "lrn", "cnorm", "pool"), authors_non_overlap_pad=1,
          caffe=("relu", "clrn", "pool"), caffenet=("relu", "pool", "clrn")),
    Layer("conv3", "conv", 384, 3, 1, 1, reads="both"),
    Layer("conv4", "conv", 384, 3, 1, 1, reads="own"),
    Layer("conv5", "conv", 256, 3, 1, 1, reads="own", paper=("relu", "pool"), authors=("pool", "relu"),
          halved_in_one_gpu=False, authors_non_overlap_pad=0),
    Layer("fc6", "fc", 4096, reads="both", paper=("relu", "dropout"), halved_in_one_gpu=False),
    Layer("fc7", "fc", 4096, reads="both", paper=("relu", "dropout"), halved_in_one_gpu=False),
    Layer("fc8", "fc", 1000, reads="both", split=False, paper=(), halved_in_one_gpu=False),
)

@dataclass(frozen=True)
class ResolvedLayer:
    """A layer of one concrete network, with every size worked out."""

    layer: Layer
    towers: int  # how many towers share this layer (1 for fc8 and for the one-GPU net)
    out_channels: int  # over all towers
    in_channels: int  # over all towers (what the layer would read if dense)
    groups: int  # 2 for conv2, conv4, conv5 of the two-GPU net; else 1
    in_size: int  # spatial size of the input (conv) or 1 (fc)
    out_size: int  # spatial size after the layer, before pooling
    pooled_size: int  # spatial size after pooling (== out_size without pooling)
    pad: int = 0  # the conv's zero padding in this net (net 147 changes conv2's and conv5's)
    ops: Tuple[str, ...] = ()  # what follows the layer in this net, in order (BLOCK_OPS)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        if self.layer.kind == "conv":
            k = self.layer.kernel
            return (self.out_channels, self.in_per_group, k, k)
        return (self.out_channels, self.in_channels)

    @property
    def params(self) -> int:
        n = 1
        for d in self.weight_shape:
            n *= d
        return n + self.out_channels

    @property
    def macs(self) -> int:
        """Multiply-adds per image."""
        if self.layer.kind == "conv":
            k = self.layer.kernel
            return self.out_size * self.out_size * self.out_channels * self.in_per_group * k * k
        return self.in_channels * self.out_channels

    @property
    def out_shape(self) -> Tuple[int, ...]:
        """Per-image output shape after the whole block (pooling included), all towers."""
        if self.layer.kind == "conv":
            return (self.out_channels, self.pooled_size, self.pooled_size)
        return (self.out_channels,)


@dataclass(frozen=True)
class NetSpec:
    """A concrete network: a ModelConfig applied to the layer table."""

    config: ModelConfig
    towers: int
    layers: Tuple[ResolvedLayer, ...]

    @property
    def pool(self) -> Tuple[int, int]:
        return POOL_OVERLAP if self.config.overlap else POOL_NON_OVERLAP

    @property
    def pool_ceil(self) -> bool:
        return pool_ceil(self.config)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def accepts(self, size: int) -> bool:
        """Whether a Caffe net (``CAFFE_BLOCKS``) reads a size x size input other than 224 and
        227: when its pooling, which rounds up, still brings the maps to pool5's size (203 does;
        rounded down it would give 5x5)."""
        if self.config.blocks not in CAFFE_BLOCKS:
            return False
        kernel, stride = self.pool
        for layer in self.layers:
            if layer.layer.kind != "conv":
                break
            size = conv_out(size, layer.layer.kernel, layer.layer.stride, layer.pad)
            if size < 1:
                return False
            if layer.layer.pool:
                size = conv_out(size, kernel, stride, 0, ceil=self.pool_ceil)
        return size == self.layers[4].pooled_size

    def __getitem__(self, name: str) -> ResolvedLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def exchanges(self):
        """The points where data crosses between towers, with values sent per image.

        Returns a list of dicts: the layer that reads both towers (or the Caffe LRN that reads
        the other tower's edge maps), what it reads, how many values each sending tower hands
        over per image, and in which directions.
        """
        if self.towers < 2:
            return []
        points = []
        previous = None
        for layer in self.layers:
            if "clrn" in layer.ops:
                before_pool = "pool" not in layer.ops or layer.ops.index("clrn") < layer.ops.index("pool")
                size = layer.out_size if before_pool else layer.pooled_size
                points.append({"layer": op_module(layer.name, "clrn"), "reads": f"{layer.name} edge",
                               "values_per_direction": HALO * size * size, "directions": ("0->1", "1->0"),
                               "halo": HALO})
            if layer.layer.reads == "both" and previous is not None:
                half = 1
                for d in previous.out_shape:
                    half *= d
                half //= self.towers
                # A split layer needs both halves on both towers; the unsplit fc8 lives on
                # tower 0, so only tower 1 sends.
                directions = ("0->1", "1->0") if layer.layer.split else ("1->0",)
                points.append(
                    {
                        "layer": layer.name,
                        "reads": _block_output_name(previous),
                        "values_per_direction": half,
                        "directions": directions,
                    }
                )
            previous = layer
        return points


def _block_output_name(layer: ResolvedLayer) -> str:
    if layer.layer.pool:
        return op_module(layer.name, "pool")
    return layer.name


def conv_out(size: int, kernel: int, stride: int, pad: int, ceil: bool = False) -> int:
    span = size + 2 * pad - kernel
    return (-(-span // stride) if ceil else span // stride) + 1


#: The blocks forms of Caffe's ports (``Layer.caffe``, ``Layer.caffenet``).
CAFFE_BLOCKS = ("caffe", "caffenet")


def pool_ceil(config: ModelConfig) -> bool:
    """Whether pooling rounds its output size up: the authors' net 147, where cuda-convnet's
    ceil rounding gives 55 -> 28 with 2x2/2 windows (the last one half outside the map), and
    Caffe's nets, whose pooling always rounds up (the same sizes as floor at 227)."""
    return authors_non_overlap(config) or config.blocks in CAFFE_BLOCKS


def authors_non_overlap(config: ModelConfig) -> bool:
    """Non-overlapping pooling built as the authors' net 147 (layers-147.cfg): 2x2/2 windows
    with ceil rounding, conv2 padding 1 and conv5 padding 0, so the maps go 55 -> 28 -> 26 ->
    13 -> 11 -> 6; the paper's reading keeps the 3x3 net's padding (55 -> 27 -> 13 -> 6)."""
    return not config.overlap and config.no_overlap_as == "authors"


def resolve(config: Optional[ModelConfig] = None, **changes) -> NetSpec:
    """The network ``config`` describes (default: the paper's net), with ``changes`` to its
    fields: ``resolve(variant="one-gpu")``. Every size worked out from ``LAYERS``."""
    if config is not None and not isinstance(config, ModelConfig):
        raise TypeError(f"resolve and build_model take a ModelConfig, or its settings as keywords "
                        f"(variant=...); got {config!r}")
    config = (config or ModelConfig()).replace(**changes)
    towers = 2 if config.variant == "two-gpu" else 1
    resolved = []
    channels, size = 3, PADDED_CROP
    for layer in LAYERS:
        row = _resolve_layer(layer, config, towers, channels, size)
        resolved.append(row)
        channels, size = row.out_channels, row.pooled_size
    return NetSpec(config=config, towers=towers, layers=tuple(resolved))


def _resolve_layer(layer: Layer, config: ModelConfig, towers: int, channels: int, size: int) -> ResolvedLayer:
    """One row of the table in a net of ``towers`` columns, reading ``channels`` maps of
    ``size`` x ``size`` (a conv layer) or their flattened values (an FC layer)."""
    filters = layer.filters
    if layer.name == "fc8":
        filters = config.num_classes
    elif towers == 1 and layer.halved_in_one_gpu:
        filters //= 2
    pad = layer.pad
    if authors_non_overlap(config) and layer.authors_non_overlap_pad is not None:
        pad = layer.authors_non_overlap_pad
    if layer.kind == "conv":
        pool_k, pool_s = POOL_OVERLAP if config.overlap else POOL_NON_OVERLAP
        out_size = conv_out(size, layer.kernel, layer.stride, pad)
        pooled = conv_out(out_size, pool_k, pool_s, 0, ceil=pool_ceil(config)) if layer.pool else out_size
        in_channels = channels
    else:
        out_size = pooled = 1
        in_channels = channels * size * size
    ops = tuple(op for op in layer.ops(config.blocks) if config.lrn or op not in NORMALIZATIONS)
    return ResolvedLayer(layer=layer, towers=towers if layer.split else 1, out_channels=filters,
                         in_channels=in_channels, groups=towers if layer.reads == "own" else 1,
                         in_size=size, out_size=out_size, pooled_size=pooled, pad=pad, ops=ops)
