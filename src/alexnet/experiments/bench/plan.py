"""What ``alexnet bench`` measures: its settings, the configurations (cases) they expand to,
and which of them this machine can run (the rest are reported as not run, with the reason)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from ...data.loader import default_workers
from ...devices import AUTO, DeviceRequest, Placement, unavailable
from ...errors import ConfigError
from ...model.lrn import LRN_IMPLS
from ...precision import PRECISIONS, autocast_unsupported

#: The configurations, by name: which net, which layout, how many devices.
MODELS = ("towers", "grouped", "one-gpu", "torchvision")
MODES = ("train", "inference")
CHOICES = ("off", "on", "both")

#: The paper's setup: one tower per GPU. ``--devices auto`` lists it even where fewer than two
#: GPUs are visible, so the table says the two-GPU figures were not measured.
PAPER_TOWERS = Placement("towers", (torch.device("cuda", 0), torch.device("cuda", 1)))


@dataclass
class BenchSettings:
    """Everything that decides what the benchmark measures. ``None`` means "the default for
    the devices and for --quick" (see :meth:`resolved`)."""

    devices: DeviceRequest = AUTO  # see ``placements``
    models: Tuple[str, ...] = MODELS
    modes: Tuple[str, ...] = MODES
    batch_sizes: Optional[Tuple[int, ...]] = None
    precisions: Optional[Tuple[str, ...]] = None
    channels_last: str = "off"
    compile: str = "off"
    lrn_impl: str = "fast"
    warmup: Optional[int] = None
    steps: Optional[int] = None
    repeats: Optional[int] = None
    lrn_bench: bool = True
    lrn_batch: Optional[int] = None
    lrn_repeats: Optional[int] = None
    profile: Optional[str] = "grouped"
    profile_steps: Optional[int] = None
    matmul_size: Optional[int] = None
    flush_denormal: bool = True
    cudnn_benchmark: bool = True
    seed: int = 0
    quick: bool = False
    loaders: bool = False
    data_root: Optional[str] = None
    loader_workers: Optional[int] = None

    def resolved(self, gpu: bool) -> "BenchSettings":
        """Fill every ``None`` for a CPU-only or a GPU run, short under ``quick``."""
        quick = self.quick
        defaults = {
            "batch_sizes": ((16,) if quick else (64,)) if not gpu else ((128,) if quick else (128, 256)),
            "precisions": ("fp32",) if not gpu else ("fp32", "bf16"),
            "warmup": 1 if quick else (2 if not gpu else 10),
            # On a CPU one step takes seconds: many one-step blocks give the median more to
            # work with on a machine whose speed drifts.
            "steps": 1 if quick or not gpu else 20,
            "repeats": 3 if quick else (8 if not gpu else 5),
            "lrn_batch": 16 if quick else 128,
            "lrn_repeats": 3 if quick else 5,
            "profile_steps": 1 if quick else 2,
            "matmul_size": 2048 if not gpu else 8192,
            "loader_workers": default_workers(),
        }
        values = {k: (defaults[k] if getattr(self, k) is None else getattr(self, k)) for k in defaults}
        out = dataclasses.replace(self, devices=DeviceRequest.of(self.devices), **values)
        out.validate()
        return out

    def validate(self) -> None:
        for name, allowed, got in (("models", MODELS, self.models), ("modes", MODES, self.modes),
                                   ("precision", PRECISIONS, self.precisions)):
            bad = [g for g in got if g not in allowed]
            if bad or not got:
                raise ConfigError(f"--{name}: {', '.join(bad) or 'nothing given'}; choose from {', '.join(allowed)}")
        for name in ("channels_last", "compile"):
            if getattr(self, name) not in CHOICES:
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(CHOICES)}")
        if self.lrn_impl not in LRN_IMPLS + ("both",):
            raise ConfigError(f"--lrn-impl must be one of {', '.join(LRN_IMPLS + ('both',))}")
        if self.profile is not None and self.profile not in MODELS:
            raise ConfigError(f"--profile must be one of {', '.join(MODELS)} or none; got {self.profile!r}")
        for name in ("warmup", "steps", "repeats", "lrn_batch", "lrn_repeats", "profile_steps", "matmul_size"):
            value = getattr(self, name)
            if value is not None and (value < (0 if name == "warmup" else 1)):
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {0 if name == 'warmup' else 1}; got {value}")
        if self.batch_sizes is not None and (not self.batch_sizes or min(self.batch_sizes) < 1):
            raise ConfigError(f"--batch-size takes positive integers; got {list(self.batch_sizes)}")

    def as_dict(self) -> Dict[str, object]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "devices": str(DeviceRequest.of(self.devices))}


def _expand(choice: str) -> Tuple[bool, ...]:
    return {"off": (False,), "on": (True,), "both": (False, True)}[choice]


# -- planning --------------------------------------------------------------------------------

def placements(devices: DeviceRequest) -> Tuple[List[Placement], Placement]:
    """``--devices`` -> (the towers placements to try, the placement of the one-device models),
    by the rules every command follows (:meth:`DeviceRequest.resolve`).

    The towers model runs the towers layout on the request: two devices, one tower each; one
    device, both towers on it; auto, two GPUs when visible, else both towers on the best
    single device, with the paper's cuda:0,cuda:1 listed first. The other models run on the
    request's first device. Devices are not checked here: a missing one makes its
    configurations "not run".
    """
    request = DeviceRequest.of(devices)
    towers = DeviceRequest(request.devices, "towers").resolve(towers=2, check=False)
    single = request.first_device().resolve(towers=1, check=False)
    tried = [towers]
    if request.auto and towers != PAPER_TOWERS:
        tried.insert(0, PAPER_TOWERS)
    return tried, single


def uses_gpu(devices: DeviceRequest) -> bool:
    """Whether ``--devices`` names a CUDA device that is visible here (it sets the defaults)."""
    towers, single = placements(devices)
    found = {*single.devices, *(d for placement in towers for d in placement.devices)}
    return any(d.type == "cuda" and unavailable([d]) is None for d in found)


@dataclass(frozen=True)
class Setup:
    """One model instance: which net, where, and how it is built and run."""

    model: str  # one of MODELS
    devices: Tuple[torch.device, ...]
    lrn_impl: Optional[str]  # None for torchvision's net (it has no LRN)
    channels_last: bool
    compile: bool

    @property
    def variant(self) -> Optional[str]:
        return {"towers": "two-gpu", "grouped": "two-gpu", "one-gpu": "one-gpu"}.get(self.model)

    @property
    def layout(self) -> Optional[str]:
        return {"towers": "towers", "grouped": "grouped", "one-gpu": "grouped"}.get(self.model)

    @property
    def primary(self) -> torch.device:
        return self.devices[0]

    def as_dict(self) -> Dict[str, object]:
        return {"model": self.model, "variant": self.variant, "layout": self.layout,
                "devices": [str(d) for d in self.devices], "lrn_impl": self.lrn_impl,
                "channels_last": self.channels_last, "compile": self.compile}


@dataclass(frozen=True)
class Case:
    """One row of the results: a setup at a batch size and precision, in one mode."""

    setup: Setup
    batch_size: int
    precision: str
    mode: str

    def as_dict(self) -> Dict[str, object]:
        return {**self.setup.as_dict(), "batch_size": self.batch_size, "precision": self.precision,
                "mode": self.mode}


def plan(settings: BenchSettings) -> List[Case]:
    """Every case the settings ask for, runnable here or not, in table order."""
    towers, single = placements(settings.devices)
    impls = LRN_IMPLS if settings.lrn_impl == "both" else (settings.lrn_impl,)
    cases = []
    for model in settings.models:
        where = towers if model == "towers" else [single]
        for devices in (placement.devices for placement in where):
            for lrn_impl in (impls if model != "torchvision" else (None,)):
                for channels_last in _expand(settings.channels_last):
                    for compiled in _expand(settings.compile):
                        setup = Setup(model, devices, lrn_impl, channels_last, compiled)
                        for batch in settings.batch_sizes:
                            for precision in settings.precisions:
                                for mode in settings.modes:
                                    cases.append(Case(setup, batch, precision, mode))
    return cases


def why_not_run(case: Case) -> Optional[str]:
    """The reason this machine cannot run ``case``, or None."""
    reason = unavailable(case.setup.devices)
    if reason:
        return reason
    reason = autocast_unsupported(case.precision, case.setup.devices)
    if reason:
        return reason
    if case.setup.compile and any(d.type == "mps" for d in case.setup.devices):
        return "torch.compile is not benchmarked on mps"
    return None
