"""Where a network runs: ``--devices`` parsed once, and every rule about layouts and devices.

    auto        towers on cuda:0 and cuda:1 when two GPUs are visible, else grouped on the
                best single device (cuda:0, then mps, then the CPU)
    0 | cuda:0  grouped on that GPU          cpu | mps      grouped on that device
    0,1         towers on cuda:0 and cuda:1  cpu,cpu        towers, both on the CPU
    0,cpu       towers on cuda:0 and the CPU (real cross-device copies with one GPU)
    0,1;2,3     one list per process on a node (torchrun): local rank r takes the r-th list

With several processes per node (``torchrun --nproc-per-node N``), ``auto`` gives local rank r
the GPUs 2r and 2r+1 for its towers (GPU r with ``--layout grouped`` or the one-GPU net), or
the CPU when no GPU is visible: :meth:`DeviceRequest.for_local_rank`.

Two values carry this through the library:

- :class:`DeviceRequest` is what the user asked for (``--devices`` and ``--layout``), parsed
  at the edge and checked for spelling only, so a run folder can record it and a benchmark
  can list a configuration this machine cannot run;
- :class:`Placement` is a layout and its devices, resolved against this machine and the
  net's number of towers (:meth:`DeviceRequest.resolve`), or given directly to
  ``build_model`` (:meth:`Placement.of`). Every layout rule is in ``Placement.of``.

A missing device is one line naming it and what to use instead, not a CUDA traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch

from .errors import ConfigError, DeviceError

#: grouped: one device, groups=2 where a layer reads its own tower; towers: one device per tower.
LAYOUTS = ("grouped", "towers")

DeviceLike = Union[str, int, torch.device]

#: What to try instead, in every "not available" message.
ALTERNATIVES = "use --devices auto, cpu (grouped) or cpu,cpu (towers on the CPU)"


def as_device(device: DeviceLike) -> torch.device:
    """'cpu', 'cuda:1', 1 (-> cuda:1), '1' or a torch.device, taken as given (no existence
    check: ``DeviceRequest.resolve`` does the checking, and tests place towers on fake devices)."""
    if isinstance(device, int):
        return torch.device("cuda", device)
    if isinstance(device, str) and device.strip().isdigit():
        return torch.device("cuda", int(device))
    return torch.device(device)


@dataclass(frozen=True)
class Placement:
    """Where a model runs: a layout and its devices (one for grouped, two for towers)."""

    layout: str
    devices: Tuple[torch.device, ...]

    @classmethod
    def of(cls, layout: str = "grouped", devices: Optional[Sequence[DeviceLike]] = None,
           towers: int = 2) -> "Placement":
        """The layout rules, for a net with ``towers`` columns (2, or 1 for the one-GPU net):
        grouped runs on one device (default the CPU); towers on one device per tower, one
        device given putting both towers on it; a one-column net runs grouped only."""
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        placed = tuple(as_device(d) for d in (devices or ["cpu"]))
        names = ", ".join(map(str, placed))
        if layout == "grouped":
            if len(placed) != 1:
                raise ConfigError(f"the grouped layout runs on one device; got {len(placed)}: {names}")
            return cls(layout, placed)
        if towers != 2:
            raise ConfigError(f"the towers layout needs the two-GPU net; a net with {towers} column "
                              f"runs grouped on one device")
        if len(placed) == 1:
            placed = placed * 2
        if len(placed) != 2:
            raise ConfigError(f"the towers layout takes one or two devices; got {len(placed)}: {names}")
        return cls(layout, placed)

    @property
    def primary(self) -> torch.device:
        """Where inputs go and logits come out (tower 0's device)."""
        return self.devices[0]

    @property
    def on_gpu(self) -> bool:
        """Every device is a CUDA GPU (what bf16/fp16 autocast needs)."""
        return all(d.type == "cuda" for d in self.devices)

    @property
    def cuda_indices(self) -> Tuple[int, ...]:
        """The CUDA devices used, once each, in order."""
        return tuple(sorted({d.index or 0 for d in self.devices if d.type == "cuda"}))

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
    not checked against this machine (``unavailable`` does that)."""
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
    count = cuda_count()
    for device in devices:
        if device.type == "cuda" and (device.index or 0) >= count:
            return f"cuda:{device.index or 0} requested but {_visible(count)}"
    if any(d.type == "mps" for d in devices) and not mps_available():
        return "mps requested but the MPS backend is not available here"
    return None


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


@dataclass(frozen=True)
class DeviceRequest:
    """``--devices`` and ``--layout`` as the user gave them: ``devices`` None means auto.
    Parsed for spelling only; :meth:`resolve` turns it into a Placement on this machine."""

    devices: Optional[Tuple[torch.device, ...]] = None
    layout: Optional[str] = None
    #: ``--devices "0,1;2,3"``: one device list per process of a node, in local-rank order.
    per_rank: Tuple[Tuple[torch.device, ...], ...] = ()

    @classmethod
    def parse(cls, devices: Optional[str] = "auto", layout: Optional[str] = None) -> "DeviceRequest":
        """``--devices`` (``auto``, one device or two, one per tower, comma-separated; or one
        such list per local process, separated by ``;``) and ``--layout``;
        ``parse(**request.as_dict())`` gives the request back."""
        if layout is not None and layout not in LAYOUTS:
            raise DeviceError(f"--layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        text = (devices or "auto").strip()
        if text.lower() == "auto":
            return cls(None, layout)
        if ";" in text:
            lists = tuple(cls._one_list(part) for part in text.split(";"))
            return cls(lists[0], layout, lists)
        return cls(cls._one_list(text), layout)

    @staticmethod
    def _one_list(text: str) -> Tuple[torch.device, ...]:
        parts = text.split(",")
        if len(parts) > 2:
            raise DeviceError(f"--devices takes one or two devices (one per tower); got {len(parts)}: {text!r}")
        return tuple(device_from_name(p) for p in parts)

    @classmethod
    def of(cls, value: Union["DeviceRequest", str, Sequence[DeviceLike], None]) -> "DeviceRequest":
        """A Python caller's way in: a request, ``None`` (auto), a ``--devices`` string, or a
        list of one or two devices."""
        if isinstance(value, DeviceRequest):
            return value
        if value is None or isinstance(value, str):
            return cls.parse(value)
        return cls(tuple(as_device(d) for d in value))

    @property
    def auto(self) -> bool:
        return self.devices is None

    def __str__(self) -> str:
        if self.devices is None:
            return "auto"
        return ";".join(",".join(str(d.index) if d.type == "cuda" else d.type for d in devices)
                        for devices in (self.per_rank or (self.devices,)))

    def for_local_rank(self, local_rank: int, local_world: int, towers: int = 2) -> "DeviceRequest":
        """The request of local process ``local_rank`` of ``local_world`` on this node.

        One process: the request itself. Several: the ``local_rank``-th of the ``;`` lists
        (which must be one per process and share no GPU); ``auto`` gives GPUs 2r and 2r+1 to
        the towers of rank r (GPU r when the net runs grouped), or the CPU without GPUs; a
        single list is shared by every process only when it names no GPU."""
        if local_world <= 1 and not self.per_rank:
            return self
        if self.per_rank:
            if len(self.per_rank) != local_world:
                raise DeviceError(f"--devices gives {len(self.per_rank)} device lists (separated by ';') for "
                                  f"{local_world} processes per node; give one list per process")
            owners = {}
            for rank, devices in enumerate(self.per_rank):
                for device in {d for d in devices if d.type == "cuda"}:
                    if device in owners:
                        raise DeviceError(f"--devices {self}: {device} is in the lists of local ranks "
                                          f"{owners[device]} and {rank}; each process needs its own GPUs")
                    owners[device] = rank
            return DeviceRequest(self.per_rank[local_rank], self.layout)
        if self.devices is not None:
            if any(d.type == "cuda" for d in self.devices):
                raise DeviceError(f"--devices {self} would put all {local_world} processes of this node on the "
                                  f"same GPUs; give one list per process, e.g. '0,1;2,3', or use --devices auto")
            return self
        count = cuda_count()
        if count == 0:
            return DeviceRequest((torch.device("cpu"),), self.layout)
        grouped = towers == 1 or self.layout == "grouped"
        per_process = 1 if grouped else 2
        if count < per_process * local_world:
            hint = "" if grouped else " (or --layout grouped: one GPU per process)"
            raise DeviceError(f"{local_world} processes per node need {per_process * local_world} GPUs "
                              f"({per_process} each) but {_visible(count)}: start fewer processes per node"
                              f"{hint}")
        first = per_process * local_rank
        return DeviceRequest(tuple(torch.device("cuda", first + i) for i in range(per_process)), self.layout)

    def resolve(self, towers: int = 2, check: bool = True) -> Placement:
        """The placement on this machine for a net with ``towers`` columns (2, or 1 for the
        one-GPU net). One device gives the grouped layout, two give towers; ``--layout
        towers`` with one device puts both towers on it. ``check=False`` applies the same
        rules to devices this machine may not have (the benchmark lists such placements as
        not run)."""
        if self.devices is None:
            found = auto_devices()
            if towers == 1 or self.layout == "grouped":
                found = found[:1]
        else:
            found = self.devices
            reason = unavailable(found) if check else None
            if reason:
                raise DeviceError(f"{reason}; {ALTERNATIVES}")
        if towers == 1:
            if len(found) != 1 or self.layout == "towers":
                raise DeviceError("the one-GPU net has a single column: give one device and no --layout towers")
            return Placement.of("grouped", found, towers)
        layout = self.layout or ("towers" if len(found) == 2 else "grouped")
        if layout == "grouped" and len(found) != 1:
            raise DeviceError(f"--layout grouped runs on one device; --devices gave {len(found)}: {self}")
        return Placement.of(layout, found, towers)

    def first_device(self) -> "DeviceRequest":
        """The request for a one-column net beside this one: its first device (auto: the best
        single device), grouped."""
        return DeviceRequest(self.devices[:1] if self.devices else None, None)

    def as_dict(self):
        return {"devices": str(self), "layout": self.layout}


AUTO = DeviceRequest()
