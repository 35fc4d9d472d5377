"""How a net runs, whatever it computes: one value for training, for every command that runs a
trained net (eval, predict, features, neighbors, export) and for the benchmark's sweep.

    Runtime()                                   # auto devices, auto precision, the fast LRN
    Runtime(devices="0,1", amp="bf16", channels_last=True)
    runtime.placement(towers=2)                 # where, on this machine (alexnet.devices)
    runtime.amp_dtype(placement)                # autocast's dtype there (alexnet.precision)
    runtime.apply(model)                        # memory format and torch.compile

None of it changes the function the net computes (up to float rounding); a run folder records
the runtime it last ran with, and a resumed session brings its own. Training adds what only a
training session needs (``alexnet.train.config.TrainRuntime``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from .data.loader import workers_rule
from .devices import AUTO, DeviceRequest, Placement
from .model.lrn import LRN_IMPLS
from .precision import AMP_CHOICES, resolve_amp
from .settings import Settings

@dataclass(frozen=True)
class Runtime(Settings):
    """Where and how a net runs.

    devices:        --devices and --layout (``alexnet.devices.DeviceRequest``; auto by default)
    amp:            auto (bf16 on GPUs that support it, fp32 elsewhere), fp32, bf16, fp16
    channels_last:  the channels_last memory format for the model and its inputs
    lrn_impl:       "fast" or "stock" (torch's LocalResponseNorm): the same values
    workers:        data-loading processes (None: one per core, up to 8)
    compile:        run the net through torch.compile
    cudnn_benchmark: let cuDNN pick its kernels by timing them (GPUs)
    """

    what = "runtime setting"

    devices: DeviceRequest = AUTO
    amp: str = "auto"
    channels_last: bool = False
    lrn_impl: str = "fast"
    workers: Optional[int] = None
    compile: bool = False
    cudnn_benchmark: bool = True

    def __post_init__(self):
        object.__setattr__(self, "devices", DeviceRequest.of(self.devices))
        super().__post_init__()

    def checks(self):
        return [
            (self.lrn_impl in LRN_IMPLS, f"--lrn-impl must be one of {', '.join(LRN_IMPLS)}; got {self.lrn_impl!r}"),
            (self.amp in AMP_CHOICES, f"--amp must be one of {', '.join(AMP_CHOICES)}; got {self.amp!r}"),
            workers_rule(self.workers),
        ]

    def placement(self, towers: int = 2) -> Placement:
        """The devices and layout for a net with ``towers`` columns, on this machine."""
        return self.devices.resolve(towers)

    def amp_dtype(self, placement: Placement) -> Optional[torch.dtype]:
        """The autocast dtype on ``placement`` (None: fp32); one line where it cannot run."""
        return resolve_amp(self.amp, placement)

    def apply(self, model: nn.Module) -> nn.Module:
        """``model`` in this runtime's memory format, compiled where asked (the compiled module
        keeps the net's attributes reachable through ``_orig_mod``)."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def as_dict(self) -> Dict[str, object]:
        """``--devices`` and ``--layout`` as the user spelled them."""
        return {**super().as_dict(), **self.devices.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping, where: str = ""):
        data = dict(data)
        devices = DeviceRequest.parse(data.pop("devices", "auto"), data.pop("layout", None))
        cls.reject_unknown(data, f"{where}: " if where else "")
        return cls(devices=devices, **data)
