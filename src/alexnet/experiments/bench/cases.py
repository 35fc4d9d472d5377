"""What ``alexnet bench`` measures: its settings, the cases they expand to, and which of them
this machine can run."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ...devices import DeviceRequest, Placement, unavailable
from ...precision import autocast_unsupported, precision_name
from ...runtime import Runtime
from ...settings import Settings

#: The nets, by name, and the paper's variant and layout of each (torchvision's has neither).
MODELS = ("towers", "grouped", "one-gpu", "torchvision")
VARIANT = {"towers": "two-gpu", "grouped": "two-gpu", "one-gpu": "one-gpu"}
LAYOUT = {"towers": "towers", "grouped": "grouped", "one-gpu": "grouped"}
MODES = ("train", "inference")
#: The runtime fields a run sweeps, each over a tuple of values; the others (devices, workers,
#: cudnn_benchmark) are one value for the whole run.
SWEPT = ("amp", "channels_last", "lrn_impl", "compile")

#: The paper's setup, one tower per GPU: ``--devices auto`` lists it even where it is not here.
PAPER_TOWERS = Placement("towers", (torch.device("cuda", 0), torch.device("cuda", 1)))

#: Defaults: (CPU, CPU --quick, GPU, GPU --quick). On a CPU one step takes seconds: many one-step
#: blocks give the median more to work with on a machine whose speed drifts.
DEFAULTS = {
    "batch_sizes": ((64,), (16,), (128, 256), (128,)),
    "warmup": (2, 1, 10, 1),
    "steps": (1, 1, 20, 1),
    "repeats": (8, 3, 5, 3),
    "lrn_batch": (128, 16, 128, 16),
    "lrn_repeats": (5, 3, 5, 3),
    "profile_steps": (2, 1, 2, 1),
    "matmul_size": (2048, 2048, 8192, 8192),
}


@dataclass(frozen=True)
class Bench(Settings):
    """What the benchmark measures: ``runtime`` with every combination of the values in ``sweep``
    (a runtime field -> a tuple of its values); ``None``: the default for the devices (``resolved``)."""

    what = "bench setting"

    runtime: Runtime = Runtime()
    sweep: Mapping[str, Tuple] = field(default_factory=lambda: {"amp": ("fp32", "auto")})
    models: Tuple[str, ...] = MODELS
    modes: Tuple[str, ...] = MODES
    batch_sizes: Optional[Tuple[int, ...]] = None
    warmup: Optional[int] = None
    steps: Optional[int] = None
    repeats: Optional[int] = None
    lrn_bench: bool = True  # the fast LRN against the stock one, on its own
    lrn_batch: Optional[int] = None
    lrn_repeats: Optional[int] = None
    profile: Optional[str] = "grouped"  # the net whose training step is profiled per layer
    profile_steps: Optional[int] = None
    matmul_size: Optional[int] = None
    flush_denormal: bool = True
    seed: int = 0
    quick: bool = False
    loaders: bool = False  # the loader paths, and training fed by the real loader
    data_root: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        self.runtimes()  # every swept value, checked by the runtime's own rules

    def checks(self):
        counts = [(name, getattr(self, name), int(name != "warmup")) for name in DEFAULTS if name != "batch_sizes"]
        return [
            _chosen("models", self.models, MODELS),
            _chosen("modes", self.modes, MODES),
            (self.profile in MODELS + (None,), f"--profile must be one of {', '.join(MODELS)} or none; "
                                               f"got {self.profile!r}"),
            (set(self.sweep) <= set(SWEPT), f"the bench sweeps {', '.join(SWEPT)}; got {', '.join(self.sweep)}"),
            *((bool(values), f"--{name.replace('_', '-')}: give at least one value")
              for name, values in self.sweep.items()),
            (self.batch_sizes is None or (bool(self.batch_sizes) and min(self.batch_sizes) >= 1),
             f"--batch-size takes positive integers; got {list(self.batch_sizes or [])}"),
            *((value is None or value >= least, f"--{name.replace('_', '-')} must be at least {least}; got {value}")
              for name, value, least in counts),
        ]

    def resolved(self, gpu: bool) -> "Bench":
        column = 2 * gpu + self.quick
        return self.replace(**{name: values[column] for name, values in DEFAULTS.items()
                               if getattr(self, name) is None})

    def runtimes(self) -> List[Runtime]:
        names = list(self.sweep)
        return [self.runtime.replace(**dict(zip(names, values))) for values in itertools.product(*self.sweep.values())]

    def as_dict(self) -> Dict[str, object]:
        """The runtime's fields, the swept ones as lists of values, then the bench's own."""
        own = super().as_dict()
        del own["runtime"], own["sweep"]
        return {**self.runtime.as_dict(), **{name: list(values) for name, values in self.sweep.items()}, **own}


def _chosen(name: str, got: Tuple[str, ...], allowed: Tuple[str, ...]):
    bad = [g for g in got if g not in allowed]
    return (bool(got) and not bad, f"--{name}: {', '.join(bad) or 'nothing given'}; choose from {', '.join(allowed)}")


def placements(devices: DeviceRequest) -> Tuple[List[Placement], Placement]:
    """``--devices`` -> (the towers placements, the one-device nets' placement), unchecked: a
    missing device makes its cases "not run"."""
    towers = DeviceRequest(devices.devices, "towers").resolve(towers=2, check=False)
    single = devices.first_device().resolve(towers=1, check=False)
    return ([PAPER_TOWERS] if devices.auto and towers != PAPER_TOWERS else []) + [towers], single


def uses_gpu(devices: DeviceRequest) -> bool:
    """Whether ``--devices`` names a CUDA device visible here (it sets the defaults)."""
    towers, single = placements(devices)
    found = {*single.devices, *(d for placement in towers for d in placement.devices)}
    return any(d.type == "cuda" and unavailable([d]) is None for d in found)


@dataclass(frozen=True)
class Case:
    """One row of the results. ``precision``: the runtime's amp by name (auto resolved where the devices are here)."""

    model: str
    placement: Placement
    runtime: Runtime
    precision: str
    batch_size: int
    mode: str

    @property
    def devices(self) -> Tuple[torch.device, ...]:
        return self.placement.devices

    @property
    def variant(self) -> Optional[str]:
        return VARIANT.get(self.model)

    @property
    def lrn_impl(self) -> Optional[str]:  # torchvision's net has no LRN
        return None if self.model == "torchvision" else self.runtime.lrn_impl

    @property
    def net(self) -> tuple:
        """One built net serves every precision, batch size and mode."""
        return self.model, self.devices, self.lrn_impl, self.runtime.channels_last, self.runtime.compile

    def as_dict(self) -> Dict[str, object]:
        return {"model": self.model, "variant": self.variant, "layout": LAYOUT.get(self.model),
                "devices": [str(d) for d in self.devices], "lrn_impl": self.lrn_impl,
                "channels_last": self.runtime.channels_last, "compile": self.runtime.compile,
                "batch_size": self.batch_size, "precision": self.precision, "mode": self.mode}


def precision(runtime: Runtime, placement: Placement) -> str:
    if runtime.amp != "auto" or unavailable(placement.devices):
        return runtime.amp
    return precision_name(runtime.amp_dtype(placement))


def cases_to_measure(bench: Bench) -> List[Case]:
    """Every case asked for, runnable here or not, in table order. A runtime that changes nothing
    adds no case: the LRN for torchvision's, auto that is fp32 here, auto on devices not here
    beside another precision (which says they are not)."""
    towers, single = placements(bench.runtime.devices)
    several_amps = len(bench.sweep.get("amp", ())) > 1
    cases = {}
    for model in bench.models:
        for placement, runtime, batch, mode in itertools.product(
                towers if model == "towers" else [single], bench.runtimes(), bench.batch_sizes, bench.modes):
            case = Case(model, placement, runtime, precision(runtime, placement), batch, mode)
            if not (case.precision == "auto" and several_amps):
                cases.setdefault(str(case.as_dict()), case)
    return list(cases.values())


def why_not_run(case: Case) -> Optional[str]:
    reason = unavailable(case.devices) or autocast_unsupported(case.precision, case.devices)
    if reason is None and case.runtime.compile and any(d.type == "mps" for d in case.devices):
        reason = "torch.compile is not benchmarked on mps"
    return reason
