"""The paper's optimizer (§5): SGD, momentum 0.9, weight decay 5e-4 on weights only.

The paper's update is
    v <- 0.9·v - 0.0005·ε·w - ε·∂L/∂w,    w <- w + v
torch.optim.SGD keeps b = -v/ε instead (b <- 0.9·b + ∂L/∂w + 0.0005·w, w <- w - ε·b). The two
are the same while ε is constant; when ε changes, the paper's velocity carries over unchanged,
so ``set_lr`` rescales torch's buffers by old/new to keep v continuous. The authors' code
applies no weight decay to biases.

Each parameter group's rate is the scheduled rate ε (or, for biases that are not annealed, the
initial one) times the group's ``lr_mult`` (the biases' multiplier) times its ``layer_mult``
(a layer with a rate of its own: ``Recipe.layer_lr``). A rate set to 0 leaves the layer where it
is from the next step (w <- w - 0·b), as cuda-convnet does: its ``Weights::update`` skips a
layer whose rate is 0 and ``WeightLayer::bpropCommon`` does not compute that gradient, so no
velocity carries it on. Here the gradient is still computed and folded into a buffer no step
uses; only the work differs.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple

import torch
from torch import nn


def split_decay(model: nn.Module, own_rate: Iterable[str] = ()) -> Tuple[list, list, Dict[str, list]]:
    """(weights, biases, {target: its parameters}) for the targets in ``own_rate`` ("conv1":
    a layer's weights, "conv1.bias": its biases): weight decay applies to weights only. A
    towers-layout parameter (towers.0.conv1.weight) belongs to its paper layer (conv1) as in the
    grouped net."""
    weights, biases, own = [], [], {target: [] for target in own_rate}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer, kind = name.split(".")[-2:]
        target = layer if kind == "weight" else f"{layer}.bias"
        if target in own:
            own[target].append(param)
        else:
            (biases if kind == "bias" else weights).append(param)
    return weights, biases, own


def paper_sgd(model: nn.Module, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
              decay_biases: bool = False, bias_lr_mult: float = 1.0, anneal_biases: bool = True,
              layer_mults: Optional[Mapping[str, float]] = None, own_rate: Iterable[str] = ()) -> torch.optim.SGD:
    """SGD with the weights in one group and the biases in another (no decay by default;
    Caffe's recipe also doubles the biases' learning rate: ``bias_lr_mult=2``; the authors'
    keeps it there: ``anneal_biases=False``), and one group more per layer of ``own_rate``
    (a layer whose rate the recipe changes on its own), at ``layer_mults`` times the rate."""
    weights, biases, layers = split_decay(model, own_rate)
    groups = [{"params": weights, "weight_decay": weight_decay, "lr_mult": 1.0, "layer": None},
              {"params": biases, "weight_decay": weight_decay if decay_biases else 0.0,
               "lr_mult": bias_lr_mult, "anneal": anneal_biases, "layer": None}]
    for target, params in layers.items():
        like = dict(groups[1] if target.endswith(".bias") else groups[0])  # a layer's biases learn as biases
        groups.append({**like, "params": params, "layer": target})
    for group in groups:
        group["initial_lr"] = lr
        group["layer_mult"] = float((layer_mults or {}).get(group["layer"], 1.0))
        group["lr"] = _rate(group, lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def _rate(group: Dict, lr: float) -> float:
    base = lr if group.get("anneal", True) else group["initial_lr"]
    return base * float(group.get("lr_mult", 1.0)) * float(group.get("layer_mult", 1.0))


def group_rates(optimizer: torch.optim.Optimizer) -> Dict[str, float]:
    """Each group's rate by what it holds: "weights", "biases", and each layer with a rate of
    its own by name ("conv1")."""
    return {group.get("layer") or ("biases" if i == 1 else "weights"): float(group["lr"])
            for i, group in enumerate(optimizer.param_groups)}


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base learning rate ε (a group's rate divided by its multiplier)."""
    group = optimizer.param_groups[0]
    return float(group["lr"]) / float(group.get("lr_mult", 1.0))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, keep_velocity: bool = True,
           layer_mults: Optional[Mapping[str, float]] = None) -> None:
    """Change the base learning rate (and, given ``layer_mults``, the multipliers of the layers
    with a rate of their own); with ``keep_velocity`` the paper's v = -ε·b stays continuous in
    every group whose rate changes between two non-zero values."""
    for group in optimizer.param_groups:
        old = float(group["lr"])
        if layer_mults is not None and group.get("layer") is not None:
            group["layer_mult"] = float(layer_mults.get(group["layer"], 1.0))
        new = _rate(group, lr)
        if keep_velocity and old > 0 and new > 0 and old != new:
            for param in group["params"]:
                buf = optimizer.state.get(param, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(old / new)
        group["lr"] = new
