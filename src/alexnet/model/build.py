"""``build_model``: the one entry point that turns a variant, a layout and devices into a net."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ..devices import DeviceLike, Placement
from .grouped import GroupedAlexNet
from .init import canonical_init
from .spec import resolve
from .towers import TowersAlexNet

def build_model(
    variant: str = "two-gpu",
    layout: str = "grouped",
    devices: Optional[Sequence[DeviceLike]] = None,
    lrn: bool = True,
    overlap: bool = True,
    num_classes: int = 1000,
    dropout: float = 0.5,
    dropout_style: str = "paper",
    init: Optional[str] = "paper",
    seed: Optional[int] = None,
    lrn_impl: str = "fast",
) -> nn.Module:
    """Build AlexNet as the paper describes it (Krizhevsky, Sutskever & Hinton, NIPS 2012).

    variant:  "two-gpu" (the paper's net, §3.5) or "one-gpu" (the single-column comparison
              net of §3.2: 48-128-192-192-256 kernels, FC 4096-4096-num_classes).
    layout:   "grouped": one device, ``groups=2`` where a layer reads only its own tower;
              "towers": tower k on ``devices[k]``, exchanging data at conv3, fc6, fc7, fc8.
    devices:  the grouped net's one device, or the towers' two (one device given for towers
              puts both towers on it). Default: the CPU.
    lrn, overlap: the ablations of §3.3 and §3.4 (LRN off; 2x2/2 pooling instead of 3x3/2).
    dropout:  the probability of zeroing a unit of fc6 and fc7 while training (§4.2: 0.5).
    dropout_style: "paper": no scaling while training, outputs times 1-dropout at test (§4.2);
              "inverted": kept units times 1/(1-dropout) while training, nothing at test
              (nn.Dropout, Caffe; what trained checkpoints that do not record a style).
    init:     "paper" or "caffe" (see ``alexnet.model.init``); None keeps PyTorch's default,
              for a model about to load a checkpoint.
    seed:     makes the initialization reproducible and identical across layouts.
    lrn_impl: "fast" (same values, less time and memory) or "stock" (torch's LocalResponseNorm).

    The model takes crops (N, 3, 224|227, same) on the 0-255 scale minus the mean and
    returns logits (N, num_classes), on ``devices[0]``. Its ``state_dict()`` always has the
    grouped net's names and shapes.
    """
    spec = resolve(variant, lrn=lrn, overlap=overlap, num_classes=num_classes, dropout=dropout,
                   dropout_style=dropout_style)
    placement = Placement.of(layout, devices, towers=spec.towers)
    if placement.layout == "grouped":
        model = GroupedAlexNet(spec, device=placement.primary, lrn_impl=lrn_impl)
    else:
        model = TowersAlexNet(spec, placement.devices, lrn_impl=lrn_impl)
    if init is not None:
        model.load_state_dict(canonical_init(spec, init, seed))
    return model
