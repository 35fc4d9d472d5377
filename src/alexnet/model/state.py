"""The canonical state dict, and conversions between it and the two-tower layout.

Canonical names and shapes are the grouped net's: ``conv1.weight`` (96, 3, 11, 11) ...
``fc8.weight`` (num_classes, 4096). Tower k holds the k-th block of rows (output channels)
of every split layer: a split layer's tensors are the towers' tensors concatenated along
dim 0, tower 0 first. fc8 is one layer, on tower 0, with the same name in both layouts.

The functions here work on any dict of tensors named after parameters, so the same mapping
converts a state dict, the optimizer's momentum buffers, or gradients.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch

from .spec import NetSpec

PARAM_KINDS = ("weight", "bias")


def tower_key(tower: int, layer: str, kind: str) -> str:
    return f"towers.{tower}.{layer}.{kind}"


def canonical_shapes(spec: NetSpec) -> "OrderedDict[str, tuple]":
    shapes = OrderedDict()
    for layer in spec.layers:
        shapes[f"{layer.name}.weight"] = tuple(layer.weight_shape)
        shapes[f"{layer.name}.bias"] = (layer.out_channels,)
    return shapes


def merge_towers(tensors: Mapping[str, torch.Tensor], spec: NetSpec, device=None) -> "OrderedDict[str, torch.Tensor]":
    """Towers-layout names -> canonical names, concatenating the towers' halves on ``device``
    (tower 0's device when None). Keys that are not parameters of the table pass through.
    Only names present in ``tensors`` are converted (a layer missing from one tower is an error).
    """
    out = OrderedDict()
    used = set()
    for layer in spec.layers:
        for kind in PARAM_KINDS:
            name = f"{layer.name}.{kind}"
            if not layer.layer.split:
                if name in tensors:
                    out[name] = tensors[name]
                    used.add(name)
                continue
            keys = [tower_key(k, layer.name, kind) for k in range(spec.towers)]
            present = [k for k in keys if k in tensors]
            if not present:
                continue
            if len(present) != len(keys):
                missing = sorted(set(keys) - set(present))
                raise KeyError(f"{name}: missing {', '.join(missing)}")
            parts = [tensors[k] for k in keys]
            target = torch.device(device) if device is not None else parts[0].device
            out[name] = torch.cat([p.detach().to(target) for p in parts], dim=0)
            used.update(keys)
    for key, value in tensors.items():
        if key not in used:
            out[key] = value
    return out


def split_towers(tensors: Mapping[str, torch.Tensor], spec: NetSpec) -> "OrderedDict[str, torch.Tensor]":
    """Canonical names -> towers-layout names: tower k gets the k-th block of rows.
    The pieces are views of the canonical tensors; keys that are not parameters pass through.
    """
    out = OrderedDict()
    split_names = set()
    for layer in spec.layers:
        for kind in PARAM_KINDS:
            name = f"{layer.name}.{kind}"
            if name not in tensors:
                continue
            if not layer.layer.split:
                out[name] = tensors[name]
            else:
                for k, part in enumerate(torch.chunk(tensors[name], spec.towers, dim=0)):
                    out[tower_key(k, layer.name, kind)] = part
            split_names.add(name)
    for key, value in tensors.items():
        if key not in split_names:
            out[key] = value
    return out
