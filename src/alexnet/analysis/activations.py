"""A hidden layer's activations, from a net of either layout: what the paper's Figure 4 compares
(fc7's 4096 values after the ReLU).

Forward hooks on the layer's module(s) read them as the net runs: one module in the grouped
net, one per tower in the two-tower net (their halves joined in tower order, tower 0's units
first, which is the canonical order of the layer's rows). The hook applies the ReLU itself,
on a new tensor, because the net's own ReLU runs in place right after the layer and the
dropout after it (at test, the paper's form scales by 1-p) is not part of the activation.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def layer_modules(model: nn.Module, layer: str) -> List[nn.Module]:
    """The module(s) computing ``layer`` (e.g. "fc7"), in tower order: the conv or linear
    modules of that name (the towers' exchange points carry the layer's name too)."""
    modules = [m for name, m in model.named_modules()
               if (name == layer or name.endswith("." + layer)) and isinstance(m, (nn.Linear, nn.Conv2d))]
    if not modules:
        raise KeyError(f"the model has no layer named {layer!r}")
    return modules


def relu_activations(model: nn.Module, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
    """Run ``model`` on ``x`` (N, 3, 224|227, same) and return ``layer``'s output after its
    ReLU, both towers' halves joined: (N, 4096) for fc7, float32, on the model's first device."""
    captured = {}

    def keep(index):
        def hook(module, inputs, output):
            captured[index] = F.relu(output).float()  # not in place: the net's ReLU follows in place
        return hook

    modules = layer_modules(model, layer)
    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    home = model.devices[0]
    halves = [captured[i].to(home) for i in range(len(modules))]
    return torch.cat(halves, dim=1).flatten(1)
