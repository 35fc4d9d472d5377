"""Measuring on devices honestly: synchronising every device used, peak memory, the bytes kept
for backward, the matrix-multiply ceiling, multiply-add counts and the kernel settings."""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ...precision import DTYPES


def synchronize(devices: Iterable[torch.device]) -> None:
    """Wait for every device, not only the current one: a towers model queues work on both GPUs,
    and waiting for one would stop the clock early."""
    for device in dict.fromkeys(devices):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()


def time_blocks(fn: Callable[[], object], devices: Sequence[torch.device], steps: int) -> float:
    """Seconds for ``steps`` calls of ``fn``; the devices are synchronised before and after, never between."""
    synchronize(devices)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(devices)
    return time.perf_counter() - start


def median_spread(values: Sequence[float]) -> Dict[str, object]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": list(values)}


def _proc_kib(field: str) -> Optional[int]:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_rss_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the resident-set high-water mark."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_kib("VmRSS") is not None


@contextlib.contextmanager
def peak_memory(devices: Sequence[torch.device]):
    """Yields a dict filled in at the end: device name -> the peak bytes above those in use before
    the block, and the method. CUDA: ``max_memory_allocated`` (exact). CPU: the rise of the
    process's resident-set high-water mark (Linux ``VmHWM``), an approximation. Elsewhere: none."""
    base: Dict[torch.device, Optional[int]] = {}
    for device in dict.fromkeys(devices):
        base[device] = None
        if device.type == "cuda":
            synchronize([device])
            torch.cuda.reset_peak_memory_stats(device)
            base[device] = torch.cuda.memory_allocated(device)
        elif device.type == "cpu" and _reset_rss_peak():
            base[device] = _proc_kib("VmRSS") * 1024
    found: Dict[str, Dict[str, object]] = {}
    yield found
    for device, before in base.items():
        peak, method = None, "not measured"
        if before is not None and device.type == "cuda":
            synchronize([device])
            peak, method = torch.cuda.max_memory_allocated(device) - before, "torch.cuda.max_memory_allocated"
        elif before is not None and _proc_kib("VmHWM") is not None:
            peak, method = max(0, _proc_kib("VmHWM") * 1024 - before), "process peak RSS increase (Linux VmHWM)"
        found[str(device)] = {"bytes": peak, "method": method}


@contextlib.contextmanager
def saved_for_backward():
    """Yields ``{"bytes": n}``: what autograd keeps for backward inside the block, each storage once."""
    seen, result = set(), {"bytes": 0}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            result["bytes"] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result


class MatmulCeilings:
    """FLOP/s of a square ``size`` matrix multiply on every (device, precision) the cases use,
    sampled once per timed round (``sample``) so that the ceiling sees the machine the figures saw."""

    def __init__(self, wanted: Iterable[tuple], size: int, log: Callable[[str], None]):
        self.size = size
        self.matrices: Dict[str, tuple] = {}
        self.rates: Dict[str, list] = {}
        self.failed: Dict[str, Dict[str, object]] = {}
        for device, precision in dict.fromkeys(wanted):
            key = self.key(device, precision)
            log(f"matmul ceiling on {device} in {precision}")
            g = torch.Generator().manual_seed(0)
            try:
                a, b = (torch.randn(size, size, generator=g).to(device, DTYPES[precision]) for _ in range(2))
                time_blocks(lambda: torch.mm(a, b), [device], 1)  # warm-up: library set-up, kernel choice
            except RuntimeError as error:  # e.g. a dtype the CPU's BLAS does not do
                self.failed[key] = {"device": str(device), "dtype": precision, "status": "failed", "reason": str(error)}
                continue
            self.matrices[key], self.rates[key] = (device, precision, a, b), []
        self.sample()

    @staticmethod
    def key(device: torch.device, precision: str) -> str:
        return f"{device if device.type == 'cuda' else device.type}:{precision}"

    def sample(self) -> None:
        for key, (device, _, a, b) in self.matrices.items():
            inner = 20 if device.type == "cuda" else 1  # a GPU finishes one in well under a millisecond
            seconds = time_blocks(lambda: torch.mm(a, b), [device], inner) / inner
            self.rates[key].append(2.0 * self.size ** 3 / seconds / 1e12)

    def results(self) -> Dict[str, Dict[str, object]]:
        found = {key: {"device": str(device), "dtype": precision, "size": self.size, "samples": len(self.rates[key]),
                       "tflops": median_spread(self.rates[key])}
                 for key, (device, precision, _, _) in self.matrices.items()}
        return {**found, **self.failed}

    def ceiling(self, devices: Sequence[torch.device], precision: str) -> Optional[float]:
        """The summed median rates of the distinct ``devices``, or None where one is missing."""
        rates = [self.rates.get(self.key(d, precision)) for d in dict.fromkeys(devices)]
        return sum(statistics.median(r) for r in rates) if all(rates) else None


def count_macs(model: nn.Module, device: torch.device, size: int = 224) -> int:
    """Multiply-adds per image, from torch's FLOP counter: for nets without a layer table
    (torchvision's alexnet: 714 M)."""
    was_training = model.training
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, size, size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def kernel_settings(flush_denormal: bool) -> Dict[str, object]:
    """The settings that change which kernels run, recorded beside the figures."""
    return {"flush_denormal": flush_denormal, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
