"""``build_model``: the one entry point that turns a ModelConfig, a layout and devices into a net."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ..devices import DeviceLike, Placement
from .config import ModelConfig
from .grouped import GroupedAlexNet
from .init import canonical_init
from .spec import resolve
from .towers import TowersAlexNet


def build_model(
    config: Optional[ModelConfig] = None,
    *,
    layout: str = "grouped",
    devices: Optional[Sequence[DeviceLike]] = None,
    seed: Optional[int] = None,
    initialize: bool = True,
    lrn_impl: str = "fast",
    fuse_relu_lrn_pool: bool = True,
    **changes,
) -> nn.Module:
    """Build AlexNet as the paper describes it (Krizhevsky, Sutskever & Hinton, NIPS 2012).

    config:   which net (``alexnet.model.config.ModelConfig``; default: the paper's), with
              ``changes`` to its fields given as keywords: ``build_model(variant="one-gpu")``,
              ``build_model(lrn=False, num_classes=10, init="caffe")``.
    layout:   "grouped": one device, ``groups=2`` where a layer reads only its own tower;
              "towers": tower k on ``devices[k]``, exchanging data at conv3, fc6, fc7, fc8.
    devices:  the grouped net's one device, or the towers' two (one device given for towers
              puts both towers on it). Default: the CPU.
    seed:     makes the initialization reproducible and identical across layouts.
    initialize: False leaves PyTorch's default weights, for a net about to load a checkpoint.
    lrn_impl: "fast" (same values, less time and memory) or "stock" (torch's LocalResponseNorm).
    fuse_relu_lrn_pool: on the CPU, run ReLU, the fast LRN and max-pooling of blocks 1 and 2 as
              one function (the same values; see ``alexnet.model.column.Column``).

    The model takes crops (N, 3, 224|227, same) on the 0-255 scale minus the mean and
    returns logits (N, num_classes), on ``devices[0]``. Its ``state_dict()`` always has the
    grouped net's names and shapes.
    """
    spec = resolve(config, **changes)
    placement = Placement.of(layout, devices, towers=spec.towers)
    options = {"lrn_impl": lrn_impl, "fuse_relu_lrn_pool": fuse_relu_lrn_pool}
    if placement.layout == "grouped":
        model = GroupedAlexNet(spec, device=placement.primary, **options)
    else:
        model = TowersAlexNet(spec, placement.devices, **options)
    if initialize:
        model.load_state_dict(canonical_init(spec, spec.config.init, seed))
    return model
