"""Measuring on devices honestly: synchronising every device used, peak memory, the
matrix-multiply ceiling, multiply-add counts, and the kernel settings that change what is
measured (flushing denormals, cuDNN's choices).

Used by ``alexnet bench`` (:mod:`alexnet.experiments.bench`); nothing here prints. The
machine the figures come from is described by :mod:`alexnet.machine`.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ...precision import precision_name


# -- timing ----------------------------------------------------------------------------------

def synchronize(devices: Iterable[torch.device]) -> None:
    """Wait for every device in ``devices``, not only the current one: a towers model queues
    work on both GPUs, and timing only one would stop the clock early."""
    for device in dict.fromkeys(devices):  # once each, in order
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()


def time_blocks(fn: Callable[[], object], devices: Sequence[torch.device], steps: int) -> float:
    """Seconds for ``steps`` calls of ``fn``, with every device synchronised before and after
    (and never in between: nothing inside the loop waits for a device)."""
    synchronize(devices)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(devices)
    return time.perf_counter() - start


def median_spread(values: Sequence[float]) -> Dict[str, object]:
    """Median, min and max of repeated measurements, and every value."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": list(values)}


# -- memory ----------------------------------------------------------------------------------

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_kib(field: str) -> Optional[int]:
    try:
        text = _PROC_STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_rss_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the resident-set high-water mark."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory on each device while a block runs, above what was in use before it.

    CUDA: ``torch.cuda.max_memory_allocated`` per device (exact: tensors allocated through
    PyTorch's allocator). CPU: the process's resident-set high-water mark (Linux ``VmHWM``,
    reset through /proc/self/clear_refs) minus the resident set before the block; this
    includes allocator effects (memory freed earlier and reused is not counted again), so it
    is an approximation, labelled as such. Elsewhere: not measured.
    """

    def __init__(self, devices: Sequence[torch.device]):
        self.devices = list(dict.fromkeys(devices))
        self.base: Dict[str, Optional[int]] = {}
        self.method: Dict[str, str] = {}

    def start(self) -> "PeakMemory":
        for device in self.devices:
            key = str(device)
            if device.type == "cuda":
                synchronize([device])
                torch.cuda.reset_peak_memory_stats(device)
                self.base[key] = torch.cuda.memory_allocated(device)
                self.method[key] = "torch.cuda.max_memory_allocated"
            elif device.type == "cpu" and _reset_rss_peak() and _proc_kib("VmRSS") is not None:
                self.base[key] = _proc_kib("VmRSS") * 1024
                self.method[key] = "process peak RSS increase (Linux VmHWM)"
            else:
                self.base[key] = None
                self.method[key] = "not measured"
        return self

    def stop(self) -> Dict[str, Dict[str, object]]:
        out = {}
        for device in self.devices:
            key = str(device)
            peak = None
            if self.base[key] is not None:
                if device.type == "cuda":
                    synchronize([device])
                    peak = torch.cuda.max_memory_allocated(device) - self.base[key]
                else:
                    hwm = _proc_kib("VmHWM")
                    peak = max(0, hwm * 1024 - self.base[key]) if hwm is not None else None
            out[key] = {"bytes": peak, "method": self.method[key] if peak is not None else "not measured"}
        return out


@contextlib.contextmanager
def saved_for_backward():
    """Counts the bytes autograd keeps for the backward pass inside the block (each storage
    once). Exact and device-independent: the memory a layer holds between its forward and
    backward passes. Yields a dict whose "bytes" is filled in as tensors are saved."""
    seen: Dict[int, int] = {}
    result = {"bytes": 0}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen[key] = storage.nbytes()
            result["bytes"] += seen[key]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result


# -- the ceiling -----------------------------------------------------------------------------

class MatmulRate:
    """FLOP/s of a square ``size`` x ``size`` matrix multiply on ``device`` in ``dtype``: the
    ceiling beside every achieved figure. ``sample()`` times one block of ``inner`` multiplies
    (GPUs finish one in well under a millisecond); the benchmark samples it between its own
    timed blocks, so the ceiling sees the same machine as the figures beside it."""

    def __init__(self, device: torch.device, dtype: torch.dtype, size: int, inner: int = 1):
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
        self.b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
        self.device, self.dtype, self.size, self.inner = device, dtype, size, inner
        self.rates: List[float] = []
        time_blocks(self._mm, [device], 1)  # warm-up: library initialisation, kernel choice

    def _mm(self):
        return torch.mm(self.a, self.b)

    def sample(self) -> None:
        seconds = time_blocks(self._mm, [self.device], self.inner) / self.inner
        self.rates.append(2.0 * self.size ** 3 / seconds / 1e12)

    def result(self) -> Dict[str, object]:
        return {"device": str(self.device), "dtype": precision_name(self.dtype), "size": self.size,
                "samples": len(self.rates), "tflops": median_spread(self.rates)}


# -- cost ------------------------------------------------------------------------------------

def count_macs(model: nn.Module, device: torch.device, size: int = 224) -> int:
    """Multiply-adds per image of the Conv2d and Linear layers ``model`` runs on one
    (N=1, 3, size, size) input: the same count as the layer table's, for models that have
    no table (torchvision's alexnet: 714 M)."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
            total[0] += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


# -- kernel settings -----------------------------------------------------------------------

_FLUSH_DENORMAL = [False]


def set_flush_denormal(flag: bool) -> bool:
    """Treat subnormal floats as zero on the CPU (what most CPU training setups do). Repeated
    steps on one synthetic batch drive the softmax into underflow, and subnormal arithmetic is
    many times slower on x86: without this, timings drift with the number of steps taken."""
    ok = bool(torch.set_flush_denormal(flag))
    _FLUSH_DENORMAL[0] = flag and ok
    return ok


def kernel_settings() -> Dict[str, object]:
    """The settings that change which kernels run, as they stand: recorded beside the figures."""
    return {
        "flush_denormal": _FLUSH_DENORMAL[0],
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
