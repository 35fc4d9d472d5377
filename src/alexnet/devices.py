"""``--devices``: which devices a command runs on, and which layout follows from them.

    auto        towers on cuda:0 and cuda:1 when two GPUs are visible, else grouped on the
                best single device (cuda:0, then mps, then the CPU)
    0 | cuda:0  grouped on that GPU          cpu | mps      grouped on that device
    0,1         towers on cuda:0 and cuda:1  cpu,cpu        towers, both on the CPU
    0,cpu       towers on cuda:0 and the CPU (real cross-device copies with one GPU)

The library's ``build_model`` takes devices as given; this module is where they are checked,
so a missing device is one line naming it, not a CUDA traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import torch

from .errors import DeviceError
from .model.build import LAYOUTS, as_device


@dataclass(frozen=True)
class Placement:
    """Where a model runs: a layout and its devices (one for grouped, two for towers)."""

    layout: str
    devices: Tuple[torch.device, ...]

    @property
    def primary(self) -> torch.device:
        """Where inputs go and logits come out (tower 0's device)."""
        return self.devices[0]

    def describe(self) -> str:
        names = ", ".join(str(d) for d in self.devices)
        return f"{self.layout} on {names}"

    def as_dict(self):
        return {"layout": self.layout, "devices": [str(d) for d in self.devices]}


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _visible(count: int) -> str:
    return "no CUDA device is visible" if count == 0 else (
        f"{count} CUDA device{' is' if count == 1 else 's are'} visible")


def device_from_name(text: str) -> torch.device:
    """One device as ``--devices`` spells it (0, cuda, cuda:1, cpu, mps) -> a torch.device,
    not checked against this machine (``unavailable`` and ``parse_device`` do that)."""
    name = text.strip().lower()
    if not name:
        raise DeviceError("--devices: empty device name (use e.g. 0, cuda:1, cpu, mps)")
    try:
        device = as_device(name)
    except RuntimeError:
        raise DeviceError(f"--devices: {text.strip()!r} is not a device (use e.g. 0, cuda:1, cpu, mps)") from None
    if device.type == "cuda":
        return torch.device("cuda", device.index or 0)
    if device.type in ("cpu", "mps"):
        return torch.device(device.type)
    raise DeviceError(f"--devices: {text.strip()!r}: only cpu, cuda and mps devices are supported")


def unavailable(devices: Iterable[torch.device]) -> Optional[str]:
    """Why these devices cannot all be used here, or None when they can."""
    devices = list(devices)
    wanted = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    if wanted:
        count = cuda_count()
        if any(i >= count for i in wanted):
            return f"needs {' and '.join(f'cuda:{i}' for i in wanted)}; {_visible(count)}"
    if any(d.type == "mps" for d in devices) and not mps_available():
        return "needs mps; the MPS backend is not available here"
    return None


def parse_device(text: str) -> torch.device:
    """One device name -> a torch.device that exists here, or a DeviceError naming it."""
    device = device_from_name(text)
    if device.type == "cuda" and device.index >= cuda_count():
        raise DeviceError(f"cuda:{device.index} requested but {_visible(cuda_count())}")
    if device.type == "mps" and not mps_available():
        raise DeviceError("mps requested but the MPS backend is not available here")
    return device


def auto_devices() -> Tuple[torch.device, ...]:
    """Both towers on cuda:0 and cuda:1 when two GPUs are visible, else the best single device."""
    count = cuda_count()
    if count >= 2:
        return (torch.device("cuda", 0), torch.device("cuda", 1))
    if count == 1:
        return (torch.device("cuda", 0),)
    if mps_available():
        return (torch.device("mps"),)
    return (torch.device("cpu"),)


def resolve_placement(devices: str = "auto", layout: Optional[str] = None, variant: str = "two-gpu") -> Placement:
    """Parse ``--devices`` (and an optional ``--layout`` override) into a checked Placement.

    One device gives the grouped layout, two give towers. ``layout="towers"`` with one device
    puts both towers on it; ``layout="grouped"`` needs one device. The one-GPU net has a single
    column, so it always runs grouped on one device.
    """
    text = (devices or "auto").strip()
    if text.lower() == "auto":
        found = auto_devices()
        if variant == "one-gpu" or layout == "grouped":
            found = found[:1]
    else:
        parts = text.split(",")
        if len(parts) > 2:
            raise DeviceError(f"--devices takes one or two devices (one per tower); got {len(parts)}: {text!r}")
        found = tuple(parse_device(p) for p in parts)
    if layout is not None and layout not in LAYOUTS:
        raise DeviceError(f"--layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if variant == "one-gpu":
        if len(found) != 1 or layout == "towers":
            raise DeviceError("the one-GPU net has a single column: give one device and no --layout towers")
        return Placement("grouped", found)
    chosen = layout or ("towers" if len(found) == 2 else "grouped")
    if chosen == "grouped" and len(found) != 1:
        raise DeviceError(f"--layout grouped runs on one device; --devices gave {len(found)}: {text!r}")
    if chosen == "towers" and len(found) == 1:
        found = found * 2
    return Placement(chosen, found)
