"""One training step, shared by the training loop and the benchmark."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """Mixed precision on the model's (first) device; ``dtype=None`` runs in fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, amp_dtype: Optional[torch.dtype] = None,
               scaler: Optional["torch.amp.GradScaler"] = None) -> torch.Tensor:
    """Forward, softmax cross-entropy, backward, SGD update. Returns the loss as a tensor on
    the logits' device (no host synchronisation: call ``.item()`` when you need the number).
    ``images`` are preprocessed crops (N, 3, 224, 224); ``labels`` int64 (N,), on any device.
    """
    device = images.device
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, amp_dtype):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels.to(logits.device, non_blocking=True))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()
