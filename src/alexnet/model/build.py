"""``build_model``: the one entry point that turns a variant, a layout and devices into a net."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError
from .grouped import GroupedAlexNet
from .init import canonical_init
from .lrn import LRN_IMPLS
from .spec import resolve
from .towers import TowersAlexNet

LAYOUTS = ("grouped", "towers")

DeviceLike = Union[str, int, torch.device]


def as_device(device: DeviceLike) -> torch.device:
    """'cpu', 'cuda:1', 1 (-> cuda:1) or a torch.device, taken as given (no existence check:
    the CLI's device parsing does the checking, and tests place towers on fake devices)."""
    if isinstance(device, int):
        return torch.device("cuda", device)
    if isinstance(device, str) and device.isdigit():
        return torch.device("cuda", int(device))
    return torch.device(device)


def build_model(
    variant: str = "two-gpu",
    layout: str = "grouped",
    devices: Optional[Sequence[DeviceLike]] = None,
    lrn: bool = True,
    overlap: bool = True,
    num_classes: int = 1000,
    dropout: float = 0.5,
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
    init:     "paper" or "caffe" (see ``alexnet.model.init``); None keeps PyTorch's default,
              for a model about to load a checkpoint.
    seed:     makes the initialization reproducible and identical across layouts.
    lrn_impl: "fast" (same values, less time and memory) or "stock" (torch's LocalResponseNorm).

    The model takes crops (N, 3, 224|227, same) on the 0-255 scale minus the mean and
    returns logits (N, num_classes), on ``devices[0]``. Its ``state_dict()`` always has the
    grouped net's names and shapes.
    """
    spec = resolve(variant, lrn=lrn, overlap=overlap, num_classes=num_classes, dropout=dropout)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if lrn_impl not in LRN_IMPLS:
        raise ConfigError(f"lrn_impl must be one of {', '.join(LRN_IMPLS)}; got {lrn_impl!r}")
    placed = [as_device(d) for d in (devices or ["cpu"])]
    if layout == "grouped":
        if len(placed) != 1:
            raise ConfigError(f"the grouped layout runs on one device; got {len(placed)}: "
                              f"{', '.join(map(str, placed))}")
        model = GroupedAlexNet(spec, device=placed[0], lrn_impl=lrn_impl)
    else:
        if variant != "two-gpu":
            raise ConfigError(f"the towers layout needs variant 'two-gpu'; {variant!r} has one column")
        if len(placed) == 1:
            placed = placed * 2
        if len(placed) != 2:
            raise ConfigError(f"the towers layout takes one or two devices; got {len(placed)}")
        model = TowersAlexNet(spec, placed, lrn_impl=lrn_impl)
    if init is not None:
        model.load_state_dict(canonical_init(spec, init, seed))
    return model
