"""The paper's optimizer (§5): SGD, momentum 0.9, weight decay 5e-4 on weights only.

The paper's update is
    v <- 0.9·v - 0.0005·ε·w - ε·∂L/∂w,    w <- w + v
torch.optim.SGD keeps b = -v/ε instead (b <- 0.9·b + ∂L/∂w + 0.0005·w, w <- w - ε·b). The two
are the same while ε is constant; when ε changes, the paper's velocity carries over unchanged,
so ``set_lr`` rescales torch's buffers by old/new to keep v continuous. The authors' code
applies no weight decay to biases.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def split_decay(model: nn.Module) -> Tuple[list, list]:
    """(weights, biases): weight decay applies to the first list only."""
    weights, biases = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (biases if name.endswith("bias") else weights).append(param)
    return weights, biases


def paper_sgd(model: nn.Module, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
              decay_biases: bool = False, bias_lr_mult: float = 1.0) -> torch.optim.SGD:
    """SGD with the weights in one group and the biases in another (no decay by default;
    Caffe's recipe also doubles the biases' learning rate: ``bias_lr_mult=2``)."""
    weights, biases = split_decay(model)
    groups = [{"params": weights, "weight_decay": weight_decay, "lr_mult": 1.0},
              {"params": biases, "weight_decay": weight_decay if decay_biases else 0.0,
               "lr_mult": bias_lr_mult}]
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base learning rate ε (a group's rate divided by its multiplier)."""
    group = optimizer.param_groups[0]
    return float(group["lr"]) / float(group.get("lr_mult", 1.0))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, keep_velocity: bool = True) -> None:
    """Change the base learning rate; with ``keep_velocity`` the paper's v = -ε·b stays continuous."""
    old = current_lr(optimizer)
    if keep_velocity and old > 0 and lr > 0 and old != lr:
        scale = old / lr
        for group in optimizer.param_groups:
            for param in group["params"]:
                buf = optimizer.state.get(param, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(scale)
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_mult", 1.0))
