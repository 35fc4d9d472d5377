"""One training step, shared by the training loop and the benchmark."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast_context


class Step(NamedTuple):
    """What a training step computed, detached, on the logits' device (no host synchronisation:
    call ``.item()`` when you need a number)."""

    loss: torch.Tensor  # the batch's mean softmax cross-entropy, fp32
    logits: torch.Tensor  # (N, classes)


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, amp_dtype: Optional[torch.dtype] = None,
               scaler: Optional["torch.amp.GradScaler"] = None) -> Step:
    """Forward, softmax cross-entropy, backward, SGD update.
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
    return Step(loss.detach(), logits.detach())
