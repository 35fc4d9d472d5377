"""One training step, shared by the training loop and the benchmark."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast_context


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, amp_dtype: Optional[torch.dtype] = None,
               scaler: Optional["torch.amp.GradScaler"] = None, with_logits: bool = False):
    """Forward, softmax cross-entropy, backward, SGD update. Returns the loss as a tensor on
    the logits' device (no host synchronisation: call ``.item()`` when you need the number),
    and with ``with_logits`` also the detached logits, as ``(loss, logits)``.
    ``images`` are preprocessed crops (N, 3, 224, 224); ``labels`` int64 (N,), on any device.
    """
    # ``model`` may be the net inside DistributedDataParallel (``.module``).
    devices = getattr(getattr(model, "module", model), "devices", (images.device,))
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(devices, amp_dtype):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels.to(logits.device, non_blocking=True))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if with_logits:
        return loss.detach(), logits.detach()
    return loss.detach()
