"""The single-device layout: both towers side by side, ``groups=2`` where a layer reads only
its own tower (conv2, conv4, conv5), LRN inside each half, conv3 and the FC layers dense.

Its parameter names and shapes are the canonical checkpoint format of every layout. The
paper's one-GPU comparison net is the same class with one tower.
"""

from __future__ import annotations

from typing import Dict

import torch

from .column import Column, prepare_input
from .spec import NetSpec


class GroupedAlexNet(Column):
    """AlexNet on one device. Input (N, 3, 224|227, same), 0-255 scale minus the mean."""

    layout = "grouped"

    def __init__(self, spec: NetSpec, device=None, **options):
        """``options``: how the column runs its layers (``Column``'s lrn_impl, fuse_relu_lrn_pool)."""
        super().__init__(spec, share=spec.towers, layers=spec.layers, device=device, **options)

    @property
    def devices(self):
        return (self.device,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = prepare_input(x, channels_last=x.device.type == "cpu", spec=self.spec)  # (N, 3, 227, 227)
        for layer in self.layers:
            # conv1 (N,96,27,27) conv2 (N,256,13,13) conv3/4 (N,384,13,13) conv5 (N,256,6,6)
            # fc6/fc7 (N,4096) fc8 (N,num_classes)
            x = self.block(layer, x)
        return x

    # The grouped net's own names are the canonical ones.
    def to_canonical(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return dict(tensors)

    def from_canonical(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return dict(tensors)

    def traffic(self):
        """No data crosses devices in this layout."""
        return {}

    def reset_traffic(self) -> None:
        pass
