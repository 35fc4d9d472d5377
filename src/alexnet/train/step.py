"""One training step, shared by the training loop and the benchmark."""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import Placement
from ..errors import ConfigError

#: --amp: auto is bf16 on GPUs that support it and fp32 elsewhere.
AMP_CHOICES = ("auto", "fp32", "bf16", "fp16")


def resolve_amp(amp: str, placement: Placement) -> Optional[torch.dtype]:
    """--amp -> the autocast dtype for a placement (None: fp32). bf16 and fp16 need every
    device to be a GPU; auto picks bf16 where the GPUs support it."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    on_gpu = placement.on_gpu
    if amp == "auto":
        if on_gpu and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "fp32":
        return None
    if not on_gpu:
        raise ConfigError(f"--amp {amp} needs every device to be a GPU; {placement.describe()} trains in fp32 "
                          f"(use --amp fp32 or auto)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def amp_name(dtype: Optional[torch.dtype]) -> str:
    """The autocast dtype as --amp spells it: bf16, fp16, or fp32 for none."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


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
