"""What a measurement ran on: the software, the commit, the CPU and the GPUs, and how busy the
machine was. Recorded beside every number the project measures: a run's config.json, the
benchmark's JSON, the GPU check's report and the maintainers' studies in tools/."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torchvision

from .versions import __version__

#: Environment variables that change how the CPU's thread pools behave.
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME",
              "THP_MEM_ALLOC_ENABLE")

#: The checkout this package runs from, when it runs from one (src/alexnet/ -> the repository).
CHECKOUT = Path(__file__).resolve().parents[2]


def software_versions() -> Dict[str, str]:
    """alexnet, torch, torchvision and Python versions, and the platform."""
    return {"alexnet": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def git_state(root: Path = CHECKOUT) -> Dict[str, object]:
    """The commit ``root`` is at, and which tracked files differ from it; ``commit`` is None
    (with the reason) outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=15,
                              check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return {"commit": None, "modified": None, "modified_files": [],
                "reason": f"not a git checkout here ({type(error).__name__})"}
    return {"commit": commit, "modified": bool(changed), "modified_files": [line[3:] for line in changed]}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A GPU's name, the CPU's model, or the device type."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_model()
    return device.type


def load_average() -> Optional[List[float]]:
    """The machine's 1, 5 and 15 minute load averages: how busy it was besides this run."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def gpus() -> List[Dict[str, object]]:
    """Every visible CUDA device: index, name, memory, compute capability."""
    found = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        found.append({"index": i, "name": props.name, "memory_bytes": props.total_memory,
                      "capability": f"{props.major}.{props.minor}"})
    return found


def describe(cuda_pairs: Sequence[Sequence[int]] = ()) -> Dict[str, object]:
    """This machine and this software: versions, the commit, the CPU and its threads, the GPUs
    (and whether each pair in ``cuda_pairs`` has peer access), the load."""
    cuda = {"available": torch.cuda.is_available(), "version": torch.version.cuda, "devices": gpus()}
    if cuda["devices"]:
        cuda["cudnn"] = torch.backends.cudnn.version()
        cuda["peer_access"] = [
            {"from": f"cuda:{a}", "to": f"cuda:{b}", "enabled": bool(torch.cuda.can_device_access_peer(a, b))}
            for a, b in cuda_pairs]
    return {
        **software_versions(),
        "git": git_state(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": cuda,
        "load_average": load_average(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }
