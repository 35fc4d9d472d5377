"""One training step, shared by the training loop and the benchmark."""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


#: --amp: auto is bf16 on GPUs that support it and fp32 elsewhere.
AMP_CHOICES = ("auto", "fp32", "bf16", "fp16")


def autocast_context(devices: Union[torch.device, Sequence[torch.device]], dtype: Optional[torch.dtype]):
    """Mixed precision on every device type the model uses (towers on a GPU and the CPU need
    both autocasts); ``dtype=None`` or fp32 runs in fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    if isinstance(devices, torch.device):
        devices = [devices]
    stack = contextlib.ExitStack()
    for device_type in sorted({torch.device(d).type for d in devices}):
        stack.enter_context(torch.autocast(device_type=device_type, dtype=dtype))
    return stack


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, amp_dtype: Optional[torch.dtype] = None,
               scaler: Optional["torch.amp.GradScaler"] = None, with_logits: bool = False):
    """Forward, softmax cross-entropy, backward, SGD update. Returns the loss as a tensor on
    the logits' device (no host synchronisation: call ``.item()`` when you need the number),
    and with ``with_logits`` also the detached logits, as ``(loss, logits)``.
    ``images`` are preprocessed crops (N, 3, 224, 224); ``labels`` int64 (N,), on any device.
    """
    devices = getattr(model, "devices", (images.device,))
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
