"""Precision, in one place: the names the commands use (``--amp``, bench's ``--precision``),
the autocast dtype each stands for, and where each can run.

    fp32   no autocast                   bf16   autocast to torch.bfloat16
    fp16   autocast to torch.float16 (on CUDA only, with loss scaling in training)

Every command that runs a net takes ``--amp`` (one of ``AMP_CHOICES``: ``auto`` is bf16 on GPUs
that support it, fp32 elsewhere) and runs any precision autocast supports on its devices
(:func:`resolve_amp`, :func:`autocast_unsupported`: fp16 on CUDA only), ``alexnet bench`` too.
The LRN computes in fp32 whatever the precision (``alexnet.model.lrn``).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence, Union

import torch

from .devices import Placement
from .errors import ConfigError

#: Every precision by name, and the autocast dtype it means (fp32: none).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(DTYPES)
#: --amp: a precision, or auto (bf16 on GPUs that support it, fp32 elsewhere).
AMP_CHOICES = ("auto", *PRECISIONS)


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """A precision's name -> the dtype autocast runs in (None: fp32, no autocast)."""
    if precision not in DTYPES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = DTYPES[precision]
    return None if dtype == torch.float32 else dtype


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """An autocast dtype -> its name (None and fp32: "fp32"); other dtypes as torch prints them."""
    if dtype is None:
        return "fp32"
    return next((name for name, d in DTYPES.items() if d == dtype), str(dtype))


def resolve_amp(amp: str, placement: Placement) -> Optional[torch.dtype]:
    """--amp -> the autocast dtype a net runs in on ``placement`` (None: fp32), the same rule for
    training, evaluation, prediction and the benchmark: auto is bf16 where every device is a GPU
    that supports it, else fp32; bf16 runs wherever autocast supports it (GPUs and the CPU),
    fp16 on GPUs only."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    if amp == "auto":
        return torch.bfloat16 if placement.on_gpu and torch.cuda.is_bf16_supported() else None
    why = autocast_unsupported(amp, placement.devices)
    if why is not None:
        raise ConfigError(f"--amp {amp}: {why}; {placement.describe()} runs in fp32 or bf16 (use --amp fp32, bf16 "
                          f"or auto)")
    return autocast_dtype(amp)


def autocast_unsupported(precision: str, devices: Iterable[torch.device]) -> Optional[str]:
    """Why autocast in ``precision`` is not measured on ``devices``, or None when it is."""
    types = {torch.device(d).type for d in devices}
    if precision == "fp16" and types != {"cuda"}:
        return "fp16 autocast runs on CUDA devices only"
    if precision == "bf16" and "mps" in types:
        return "bf16 autocast is not supported on mps here"
    return None


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
