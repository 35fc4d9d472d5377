"""Measuring on devices honestly: synchronising every device used, peak memory, the
matrix-multiply ceiling, multiply-add counts and the machine's description.

Used by ``alexnet bench`` (:mod:`alexnet.experiments.bench`); nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ...devices import cuda_count
from ...machine import software_versions


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


def spread(values: Sequence[float]) -> Dict[str, object]:
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
        return {"device": str(self.device), "dtype": dtype_name(self.dtype), "size": self.size,
                "samples": len(self.rates), "tflops": spread(self.rates)}


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """--precision -> the autocast dtype for ``train_step``/``autocast_context`` (None: fp32)."""
    dtype = DTYPES[precision]
    return None if dtype == torch.float32 else dtype


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


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


# -- the machine -----------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_model()
    return device.type


def _git_commit() -> Optional[Dict[str, object]]:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified_files": bool(dirty)}


def environment(cuda_pairs: Sequence[Sequence[int]] = ()) -> Dict[str, object]:
    """Software versions, the CPU, the GPUs, and the settings that change kernel choices."""
    cuda = {"available": torch.cuda.is_available(), "version": torch.version.cuda, "devices": []}
    if cuda_count():
        cuda["cudnn"] = torch.backends.cudnn.version()
        for i in range(cuda_count()):
            props = torch.cuda.get_device_properties(i)
            cuda["devices"].append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                                    "capability": f"{props.major}.{props.minor}"})
        cuda["peer_access"] = [
            {"from": f"cuda:{a}", "to": f"cuda:{b}", "enabled": bool(torch.cuda.can_device_access_peer(a, b))}
            for a, b in cuda_pairs
        ]
    return {
        **software_versions(),
        "git": _git_commit(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": cuda,
        "load_average": load_average(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "kernel_settings": {
            "flush_denormal": _flush_denormal_state(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }


#: Environment variables that change how the CPU's thread pools behave.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME",
              "THP_MEM_ALLOC_ENABLE")


def load_average() -> Optional[List[float]]:
    """The machine's 1, 5 and 15 minute load averages: how busy it was besides this run."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


_FLUSH_DENORMAL = [False]


def set_flush_denormal(flag: bool) -> bool:
    """Treat subnormal floats as zero on the CPU (what most CPU training setups do). Repeated
    steps on one synthetic batch drive the softmax into underflow, and subnormal arithmetic is
    many times slower on x86: without this, timings drift with the number of steps taken."""
    ok = bool(torch.set_flush_denormal(flag))
    _FLUSH_DENORMAL[0] = flag and ok
    return ok


def _flush_denormal_state() -> bool:
    return _FLUSH_DENORMAL[0]
