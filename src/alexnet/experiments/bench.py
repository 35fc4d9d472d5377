"""``alexnet bench``: throughput, memory and cross-device traffic, measured side by side.

For every configuration (a model on its devices, a batch size, a precision, a memory format,
compiled or not, an LRN implementation) and every mode (inference; a full training step:
forward, loss, backward, the paper's SGD via :func:`alexnet.train.step.train_step`), the
benchmark runs warm-up steps, then ``repeats`` timed blocks of ``steps`` steps. Blocks of
different configurations are interleaved (round 1 of every configuration, then round 2, ...),
so a slow moment on a shared machine spreads over all of them instead of one; figures are
medians over the blocks, with the min and max beside them.

Beside each figure: peak memory per device, bytes handed between towers per step and per
image (the model's own transfer counters), achieved FLOP/s against a matrix multiply
measured on the same device in the same run (sampled once per round, between the timed
blocks), and every setting. A configuration this
machine cannot run (two GPUs on a CPU-only machine) is reported as not run, with the reason;
nothing is estimated. Sections: ``matmul``, ``results``, ``lrn`` (the fast LRN against the
stock one), ``profile`` (per-layer time of one configuration), ``targets`` (the ratios the
project promises), ``loaders`` (the data pipeline's loader paths side by side) and
``end_to_end`` (training fed by the real loader, beside the synthetic-input step).

Timing syncs every device a configuration uses before and after each timed block and never
inside it: the steps themselves do not wait for the host.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.files import write_atomically
from ..data.loader import default_workers
from ..devices import auto_devices, device_from_name, unavailable
from ..errors import AlexNetError, ConfigError
from ..model.build import build_model
from ..model.lrn import LRN_IMPLS, LocalResponseNorm
from ..model.spec import CROP, resolve
from ..train.optim import paper_sgd
from ..train.step import autocast_context, train_step
from . import measure
from .layer_profile import profile_layers

SCHEMA = "alexnet-bench/1"

#: The configurations, by name: which net, which layout, how many devices.
MODELS = ("towers", "grouped", "one-gpu", "torchvision")
MODES = ("train", "inference")
PRECISIONS = tuple(measure.DTYPES)
CHOICES = ("off", "on", "both")

#: AlexNet's two LRN inputs (per image): after conv1 and after conv2, two towers each.
LRN_SHAPES = ((96, 55, 55), (256, 27, 27))
LRN_GROUPS = 2


@dataclass
class Settings:
    """Everything that decides what the benchmark measures. ``None`` means "the default for
    the devices and for --quick" (see :meth:`resolved`)."""

    devices: str = "auto"
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

    def resolved(self, gpu: bool) -> "Settings":
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
        out = dataclasses.replace(self, **values)
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
        return dataclasses.asdict(self)


def _expand(choice: str) -> Tuple[bool, ...]:
    return {"off": (False,), "on": (True,), "both": (False, True)}[choice]


# -- planning --------------------------------------------------------------------------------

def parse_devices(text: str) -> Tuple[List[Tuple[torch.device, ...]], torch.device]:
    """``--devices`` -> (the towers placements to try, the single device for the rest).

    auto: towers on cuda:0,cuda:1; with fewer than two GPUs that placement is still listed
    (and reported as not run), and the towers also run with both towers on the best single
    device. ``X``: towers on X,X. ``X,Y``: towers on X,Y; the one-device models on X.
    Devices are not checked here: a missing one makes its configurations "not run".
    """
    text = (text or "auto").strip().lower()
    if text == "auto":
        found = auto_devices()
        if len(found) == 2:
            return [found], found[0]
        return [(torch.device("cuda", 0), torch.device("cuda", 1)), (found[0], found[0])], found[0]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2 or not all(parts):
        raise ConfigError(f"--devices takes auto, one device or two (one per tower); got {text!r}")
    found = [device_from_name(p) for p in parts]
    pair = tuple(found) if len(found) == 2 else (found[0], found[0])
    return [pair], found[0]


def uses_gpu(devices: str) -> bool:
    """Whether ``--devices`` names a CUDA device that is visible here (it sets the defaults)."""
    towers, single = parse_devices(devices)
    found = {single, *(d for pair in towers for d in pair)}
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

    def describe(self) -> Dict[str, object]:
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

    def describe(self) -> Dict[str, object]:
        return {**self.setup.describe(), "batch_size": self.batch_size, "precision": self.precision,
                "mode": self.mode}


def plan(settings: Settings) -> List[Case]:
    """Every case the settings ask for, runnable here or not, in table order."""
    towers, single = parse_devices(settings.devices)
    impls = LRN_IMPLS if settings.lrn_impl == "both" else (settings.lrn_impl,)
    cases = []
    for model in settings.models:
        placements = towers if model == "towers" else [(single,)]
        for devices in placements:
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
    types = {d.type for d in case.setup.devices}
    if case.precision == "fp16" and types != {"cuda"}:
        return "fp16 autocast is benchmarked on CUDA devices only"
    if case.precision == "bf16" and "mps" in types:
        return "bf16 autocast is not supported on mps here"
    if case.setup.compile and "mps" in types:
        return "torch.compile is not benchmarked on mps"
    return None


# -- building and stepping -------------------------------------------------------------------

def build(setup: Setup, seed: int) -> nn.Module:
    """The setup's model, initialised, on its devices, in its memory format (not compiled)."""
    if setup.model == "torchvision":
        import torchvision

        torch.manual_seed(seed)
        model = torchvision.models.alexnet(weights=None).to(setup.primary)
    else:
        model = build_model(variant=setup.variant, layout=setup.layout, devices=list(setup.devices),
                            seed=seed, lrn_impl=setup.lrn_impl)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def macs_per_image(setup: Setup, model: nn.Module) -> int:
    """From the layer table for the paper's nets; counted from the modules for torchvision's."""
    if setup.variant is not None:
        return resolve(setup.variant).macs
    return measure.count_macs(model, setup.primary)


class Runner:
    """A built setup: the model (and its compiled form), its optimizer and its inputs."""

    def __init__(self, setup: Setup, seed: int):
        self.setup = setup
        self.model = build(setup, seed)
        self.macs = macs_per_image(setup, self.model)
        self.run_model = torch.compile(self.model) if setup.compile else self.model
        self.optimizer = paper_sgd(self.model)
        self.inputs: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.scalers: Dict[str, object] = {}
        self.seed = seed

    def batch(self, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """A synthetic batch on the first device: crops on the 0-255 scale minus the mean."""
        if size not in self.inputs:
            g = torch.Generator().manual_seed(self.seed + size)
            images = torch.randn(size, 3, CROP, CROP, generator=g) * 60
            labels = torch.randint(0, 1000, (size,), generator=g)
            if self.setup.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.inputs[size] = (images.to(self.setup.primary), labels.to(self.setup.primary))
        return self.inputs[size]

    def step_fn(self, case: Case) -> Callable[[], object]:
        images, labels = self.batch(case.batch_size)
        dtype = measure.DTYPES[case.precision]
        amp = None if dtype == torch.float32 else dtype
        model = self.run_model
        if case.mode == "train":
            scaler = None
            if case.precision == "fp16":
                # fp16 training needs loss scaling; GradScaler reads an inf/NaN flag on the host
                # once per step, as real fp16 training does.
                scaler = self.scalers.setdefault("fp16", torch.amp.GradScaler("cuda"))

            def train():
                return train_step(model, images, labels, self.optimizer, amp_dtype=amp, scaler=scaler)
            return train

        def infer():
            with torch.inference_mode(), autocast_context(self.setup.devices, amp):
                return model(images)
        return infer

    def set_mode(self, case: Case) -> None:
        self.model.train(case.mode == "train")

    def reset_traffic(self) -> None:
        if hasattr(self.model, "reset_traffic"):
            self.model.reset_traffic()

    def traffic(self) -> Optional[Dict[str, Dict[str, int]]]:
        return self.model.traffic() if hasattr(self.model, "traffic") else None


# -- results ---------------------------------------------------------------------------------

def _row(case: Case, status: str, reason: Optional[str] = None) -> Dict[str, object]:
    return {**case.describe(), "status": status, "reason": reason}


class _Traffic:
    """Sums a case's transfer counters over its timed blocks."""

    def __init__(self):
        self.steps = 0
        self.points: Dict[str, Dict[str, int]] = {}

    def add(self, counts: Optional[Dict[str, Dict[str, int]]], steps: int) -> None:
        self.steps += steps
        for name, c in (counts or {}).items():
            total = self.points.setdefault(name, {"bytes": 0, "copied_bytes": 0})
            total["bytes"] += c["bytes"]
            total["copied_bytes"] += c["copied_bytes"]

    def summary(self, case: Case, has_counters: bool) -> Dict[str, object]:
        if not has_counters:
            return {"counted": False, "reason": "single device: no transfer points"}
        if case.setup.compile:
            return {"counted": False, "reason": "the transfer counters are skipped under torch.compile; "
                                                "run with --compile off for the counts"}
        per_step = {name: {k: v / self.steps for k, v in c.items()} for name, c in self.points.items()}
        handed = sum(c["bytes"] for c in per_step.values())
        copied = sum(c["copied_bytes"] for c in per_step.values())
        out = {
            "counted": True,
            "forward_passes": self.steps,
            # Everything handed from one tower to the other, counted by the model: what crosses
            # between two GPUs (the input hand-off included).
            "handed_over_bytes_per_step": handed,
            "handed_over_bytes_per_image": handed / case.batch_size,
            # Of that, what actually changed device here (zero with both towers on one device).
            "crossed_devices_bytes_per_step": copied,
            "crossed_devices_bytes_per_image": copied / case.batch_size,
            "points_bytes_per_step": {name: c["bytes"] for name, c in per_step.items()},
        }
        if case.mode == "train":
            out["note"] = ("forward pass only: in training the gradients of the exchanged halves "
                           "travel back the same way (not counted)")
        return out


def _fill(row: Dict[str, object], case: Case, runner: Runner, seconds: List[float], steps: int,
          traffic: _Traffic, ceiling: Optional[float]) -> None:
    ms = [s / steps * 1e3 for s in seconds]
    ips = [case.batch_size / (s / steps) for s in seconds]
    flops_per_image = 2 * runner.macs * (3 if case.mode == "train" else 1)
    achieved = flops_per_image * measure.spread(ips)["median"] / 1e12
    row.update({
        "ms_per_step": measure.spread(ms),
        "images_per_s": measure.spread(ips),
        "macs_per_image": runner.macs,
        # Training counts forward + the two backward products (input and weight gradients):
        # 3x the forward pass, the usual convention.
        "flops_per_image": flops_per_image,
        "achieved_tflops": achieved,
        "matmul_tflops": ceiling,
        "fraction_of_matmul": achieved / ceiling if ceiling else None,
        "traffic": traffic.summary(case, bool(runner.traffic())),
    })


def _matmul_key(device: torch.device, precision: str) -> str:
    return f"{device.type}:{precision}" if device.type != "cuda" else f"{device}:{precision}"


def prepare_matmul(cases: List[Case], settings: Settings, log: Callable[[str], None]) -> Dict[str, object]:
    """The matrix-multiply ceiling for every (device, precision) the runnable cases use: a
    :class:`measure.MatmulRate` each (or a failure entry), sampled once here and then once per
    timed round."""
    wanted = {}
    for case in cases:
        for device in case.setup.devices:
            wanted.setdefault(_matmul_key(device, case.precision), (device, case.precision))
    out: Dict[str, object] = {}
    for key, (device, precision) in wanted.items():
        log(f"matmul ceiling on {device} in {precision}")
        try:
            out[key] = measure.MatmulRate(device, measure.DTYPES[precision], settings.matmul_size,
                                          inner=20 if device.type == "cuda" else 1)
            out[key].sample()
        except RuntimeError as error:  # e.g. a dtype the CPU's BLAS does not do
            out[key] = {"device": str(device), "dtype": precision, "status": "failed", "reason": str(error)}
    return out


def _matmul_results(matmul: Dict[str, object]) -> Dict[str, Dict[str, object]]:
    return {key: m.result() if isinstance(m, measure.MatmulRate) else m for key, m in matmul.items()}


def _ceiling(matmul: Dict[str, Dict[str, object]], case: Case) -> Optional[float]:
    """Sum of the matmul rates of the distinct devices the case uses."""
    total = 0.0
    for device in dict.fromkeys(case.setup.devices):
        entry = matmul.get(_matmul_key(device, case.precision), {})
        if "tflops" not in entry:
            return None
        total += entry["tflops"]["median"]
    return total


def run_models(cases: List[Case], settings: Settings, matmul, log) -> Tuple[List[Dict[str, object]], Dict[Setup, Runner]]:
    """Warm up every runnable case (measuring its peak memory), then time all of them in
    interleaved rounds."""
    rows: List[Dict[str, object]] = []
    runners: Dict[Setup, Runner] = {}
    live: List[Tuple[Case, Dict[str, object], Callable[[], object]]] = []
    for case in cases:
        reason = why_not_run(case)
        row = _row(case, "not run" if reason else "ok", reason)
        rows.append(row)
    for setup in dict.fromkeys(c.setup for c in cases):
        mine = [(c, r) for c, r in zip(cases, rows) if c.setup == setup and r["status"] == "ok"]
        if not mine:
            continue
        # Inference first: its peak memory then excludes the gradients and momentum buffers
        # that the first training step allocates.
        mine.sort(key=lambda cr: cr[0].mode != "inference")
        log(f"building {setup.model} on {', '.join(map(str, setup.devices))}")
        try:
            runner = runners[setup] = Runner(setup, settings.seed)
        except Exception as error:  # noqa: BLE001 - reported per case, the run goes on
            for _, row in mine:
                row.update(status="failed", reason=f"build: {type(error).__name__}: {error}")
            continue
        weights = _parameter_bytes(runner.model)
        for case, row in mine:
            log(f"warm-up: {_label(case)}")
            memory = measure.PeakMemory(setup.devices).start()
            try:
                runner.set_mode(case)
                fn = runner.step_fn(case)
                start = time.perf_counter()
                measure.time_blocks(fn, setup.devices, settings.warmup)
                row["warmup_s"] = time.perf_counter() - start
            except Exception as error:  # noqa: BLE001
                row.update(status="failed", reason=f"{type(error).__name__}: {error}".splitlines()[0])
                continue
            row["peak_memory"] = {
                device: {"bytes": None if v["bytes"] is None else weights.get(device, 0) + v["bytes"],
                         "parameters_bytes": weights.get(device, 0), "above_parameters_bytes": v["bytes"],
                         "method": v["method"]}
                for device, v in memory.stop().items()}
            live.append((case, row, fn))
    seconds: Dict[int, List[float]] = {id(r): [] for _, r, _ in live}
    traffic: Dict[int, _Traffic] = {id(r): _Traffic() for _, r, _ in live}
    for round_ in range(settings.repeats):
        log(f"timed round {round_ + 1}/{settings.repeats} ({len(live)} cases x {settings.steps} steps)")
        for rate in matmul.values():
            if isinstance(rate, measure.MatmulRate):
                rate.sample()
        for case, row, fn in live:
            if row["status"] != "ok":
                continue
            runner = runners[case.setup]
            runner.set_mode(case)
            runner.reset_traffic()
            try:
                seconds[id(row)].append(measure.time_blocks(fn, case.setup.devices, settings.steps))
            except Exception as error:  # noqa: BLE001
                row.update(status="failed", reason=f"{type(error).__name__}: {error}".splitlines()[0])
                continue
            traffic[id(row)].add(runner.traffic(), settings.steps)
    ceilings = _matmul_results(matmul)
    for case, row, fn in live:
        if row["status"] == "ok":
            _fill(row, case, runners[case.setup], seconds[id(row)], settings.steps, traffic[id(row)],
                  _ceiling(ceilings, case))
        row.update(warmup_steps=settings.warmup, timed_steps=settings.steps, repeats=settings.repeats,
                   input="synthetic batch already on the device (data loading excluded)")
    return rows, runners


def _parameter_bytes(model: nn.Module) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for p in model.parameters():
        out[str(p.device)] = out.get(str(p.device), 0) + p.numel() * p.element_size()
    return out


def _label(case: Case) -> str:
    s = case.setup
    parts = [s.model, ",".join(map(str, s.devices)), f"b{case.batch_size}", case.precision, case.mode]
    if s.lrn_impl:
        parts.append(f"lrn={s.lrn_impl}")
    if s.channels_last:
        parts.append("channels_last")
    if s.compile:
        parts.append("compiled")
    return " ".join(parts)


# -- the LRN on its own ----------------------------------------------------------------------

def run_lrn(settings: Settings, device: torch.device, log) -> List[Dict[str, object]]:
    """The fast LRN against the stock one at AlexNet's two LRN shapes, forward + backward:
    time (interleaved repeats), peak memory, bytes kept for backward, and the largest
    difference between their values and gradients."""
    reason = unavailable([device])
    rows = []
    for shape in LRN_SHAPES:
        full = (settings.lrn_batch, *shape)
        base = {"shape": list(full), "groups": LRN_GROUPS, "device": str(device), "dtype": "fp32",
                "pass": "forward+backward", "repeats": settings.lrn_repeats}
        if reason:
            rows.extend({**base, "impl": impl, "status": "not run", "reason": reason} for impl in LRN_IMPLS)
            continue
        g = torch.Generator().manual_seed(settings.seed)
        # ReLU outputs on the scale conv1 and conv2 produce for 0-255 inputs.
        x = (torch.randn(full, generator=g) * 30).relu_().to(device)
        grad = torch.randn(full, generator=g).to(device)
        modules = {impl: LocalResponseNorm(shape[0], groups=LRN_GROUPS, impl=impl) for impl in LRN_IMPLS}
        outputs = {}

        def run(impl):
            leaf = x.detach().requires_grad_(True)
            modules[impl](leaf).backward(grad)

        by_impl = {}
        for impl in LRN_IMPLS:
            log(f"LRN {impl} {tuple(full)}: warm-up and memory")
            memory = measure.PeakMemory([device]).start()
            with measure.saved_for_backward() as saved:
                leaf = x.detach().requires_grad_(True)
                y = modules[impl](leaf)
            y.backward(grad)
            outputs[impl] = (y.detach(), leaf.grad)
            del y, leaf
            by_impl[impl] = {**base, "impl": impl, "status": "ok", "peak_memory": memory.stop()[str(device)],
                             "saved_for_backward_bytes": saved["bytes"], "ms": []}
        (yf, gf), (ys, gs) = outputs["fast"], outputs["stock"]
        difference = {
            "max_rel_diff_value": float(((yf - ys).abs() / ys.abs().clamp_min(1e-30)).max()),
            "max_diff_grad_over_max_grad": float((gf - gs).abs().max() / gs.abs().max().clamp_min(1e-30)),
        }
        del outputs, yf, gf, ys, gs
        for r in range(settings.lrn_repeats):
            log(f"LRN {tuple(full)}: round {r + 1}/{settings.lrn_repeats}")
            for impl in LRN_IMPLS:
                by_impl[impl]["ms"].append(measure.time_blocks(lambda: run(impl), [device], 1) * 1e3)
        for impl in LRN_IMPLS:
            by_impl[impl]["ms"] = measure.spread(by_impl[impl]["ms"])
        speedup = by_impl["stock"]["ms"]["median"] / by_impl["fast"]["ms"]["median"]
        by_impl["fast"].update(speedup_vs_stock=speedup, **difference)
        rows.extend(by_impl[impl] for impl in LRN_IMPLS)
        del x, grad
    return rows


# -- targets ---------------------------------------------------------------------------------

#: The ratios the project promises (issue 5), measured side by side in one run.
CPU_TARGETS = {
    "lrn": 5.0,  # fast LRN forward+backward at least 5x the stock one at both shapes
    "grouped_vs_torchvision": 0.90,  # training images/s, at the same batch and settings
    "towers_vs_grouped": 0.95,  # towers with both towers on one device vs grouped, training
}
#: On one H100 in bf16: training images/s of the grouped net, eager with the stock LRN, and
#: with the fast LRN and torch.compile.
GPU_TARGETS = {"h100_bf16": 20000.0, "h100_bf16_fast_compiled": 40000.0}


def _find(rows, **want):
    for row in rows:
        if row.get("status") == "ok" and all(row.get(k) == v for k, v in want.items()):
            return row
    return None


def _ratio_target(name, description, threshold, numerator, denominator, matched_on):
    if numerator is None or denominator is None:
        return {"name": name, "description": description, "threshold": threshold, "status": "not measured",
                "reason": "the run did not include both configurations", "matched_on": matched_on}
    # The ratio of the medians; beside it the ratio within each round (the two blocks ran
    # seconds apart), whose median is less sensitive to a machine whose speed drifts.
    value = numerator["images_per_s"]["median"] / denominator["images_per_s"]["median"]
    rounds = [a / b for a, b in zip(_per_round(numerator), _per_round(denominator))]
    return {"name": name, "description": description, "threshold": threshold, "value": value,
            "per_round": rounds, "per_round_median": statistics.median(rounds),
            "status": "met" if value >= threshold else "missed", "matched_on": matched_on}


def _per_round(row):
    return [row["batch_size"] / (ms / 1e3) for ms in row["ms_per_step"]["all"]]


def evaluate_targets(rows: List[Dict[str, object]], lrn_rows: List[Dict[str, object]],
                     environment: Dict[str, object]) -> List[Dict[str, object]]:
    """Each promised ratio, from rows measured in this run (or "not measured", with why)."""
    targets = []
    fast = [r for r in lrn_rows if r.get("impl") == "fast" and r.get("status") == "ok"]
    if fast:
        for r in fast:
            stock = _find(lrn_rows, impl="stock", shape=r["shape"])
            # Peak memory where it was measured for both (the CPU's RSS high-water mark misses
            # memory the allocator reuses, as at small batches); else what autograd keeps.
            peaks = [None if row is None else row["peak_memory"]["bytes"] for row in (r, stock)]
            basis = "peak" if all(peaks) else "saved_for_backward"
            lower = stock is not None and (peaks[0] < peaks[1] if basis == "peak"
                                           else r["saved_for_backward_bytes"] < stock["saved_for_backward_bytes"])
            targets.append({
                "name": f"lrn {'x'.join(map(str, r['shape']))}",
                "description": "fast LRN forward+backward vs the stock one, same shape (>= 5x, lower memory)",
                "threshold": CPU_TARGETS["lrn"], "value": r["speedup_vs_stock"],
                "lower_memory": lower, "memory_basis": basis,
                "status": "met" if r["speedup_vs_stock"] >= CPU_TARGETS["lrn"] else "missed",
                "matched_on": {"shape": r["shape"], "device": r["device"]},
            })
    else:
        targets.append({"name": "lrn", "description": "fast LRN vs stock", "threshold": CPU_TARGETS["lrn"],
                        "status": "not measured", "reason": "the LRN section did not run"})
    keys = ("batch_size", "precision", "channels_last", "compile", "mode")
    for ref in [r for r in rows if r.get("status") == "ok" and r["model"] == "torchvision" and r["mode"] == "train"]:
        same = {k: ref[k] for k in keys}
        grouped = _find(rows, model="grouped", lrn_impl="fast", devices=ref["devices"], **same)
        targets.append(_ratio_target(
            "grouped vs torchvision", "training images/s of the paper's net (grouped, fast LRN) over "
            "torchvision.models.alexnet's, same device and settings (>= 0.90)",
            CPU_TARGETS["grouped_vs_torchvision"], grouped, ref, {**same, "devices": ref["devices"]}))
    for grouped in [r for r in rows if r.get("status") == "ok" and r["model"] == "grouped"]:
        same = {k: grouped[k] for k in keys + ("lrn_impl",)}
        one_device = [grouped["devices"][0]] * 2
        towers = _find(rows, model="towers", devices=one_device, **same)
        if towers is not None:
            targets.append(_ratio_target(
                "towers (one device) vs grouped", f"{grouped['mode']} images/s of the towers layout with both "
                "towers on one device over the grouped layout's (>= 0.95)",
                CPU_TARGETS["towers_vs_grouped"], towers, grouped, {**same, "devices": one_device}))
    gpus = [d["name"] for d in environment.get("cuda", {}).get("devices", [])]
    for name, threshold, impl, compiled in (("h100_bf16", GPU_TARGETS["h100_bf16"], "stock", False),
                                            ("h100_bf16_fast_compiled", GPU_TARGETS["h100_bf16_fast_compiled"],
                                             "fast", True)):
        # The best batch size of the run counts: the target is a throughput, not a batch size.
        matching = [r for r in rows if r.get("status") == "ok" and r["model"] == "grouped" and r["mode"] == "train"
                    and r["precision"] == "bf16" and r["lrn_impl"] == impl and r["compile"] == compiled
                    and "H100" in measure_device_name(r["devices"][0], gpus)]
        row = max(matching, key=lambda r: r["images_per_s"]["median"], default=None)
        description = (f"training images/s of the grouped net on one H100 in bf16, LRN {impl}, "
                       f"{'compiled' if compiled else 'eager'} (>= {threshold:,.0f})")
        if row is None:
            targets.append({"name": name, "description": description, "threshold": threshold,
                            "status": "not measured", "reason": "needs an H100 and a run with --precision bf16 "
                            f"--lrn-impl {impl if impl == 'fast' else 'both'} --compile {'on' if compiled else 'off'}"})
        else:
            value = row["images_per_s"]["median"]
            targets.append({"name": name, "description": description, "threshold": threshold, "value": value,
                            "status": "met" if value >= threshold else "missed",
                            "matched_on": {k: row[k] for k in keys + ("devices", "lrn_impl")},
                            "device_name": measure_device_name(row["devices"][0], gpus)})
    return targets


def measure_device_name(device: str, gpus: Sequence[str]) -> str:
    d = torch.device(device)
    if d.type == "cuda" and d.index is not None and d.index < len(gpus):
        return gpus[d.index]
    return d.type


# -- the loaders ------------------------------------------------------------------------

def run_loaders(settings: Settings, batch_size: int) -> Dict[str, object]:
    """The data pipeline's loader paths (``alexnet.data.throughput``) on the same images."""
    from ..data.throughput import measure_loader_paths

    try:
        # In this process (no workers), in interleaved rounds: images per second per core, the
        # figure that decides how many cores a GPU needs. With workers the first batches are
        # prefetched while the warm-up runs, and a short timed window would flatter every path.
        rows = measure_loader_paths(settings.data_root, batch_size=batch_size, workers=0,
                                    batches=5 if settings.quick else 20)
    except AlexNetError as error:  # no dataset here, for example: the rest of the run stands
        return {"status": "failed", "reason": str(error)}
    return {"status": "ok", "batch_size": batch_size, "workers": 0, "rows": rows}


def run_end_to_end(settings: Settings, rows: List[Dict[str, object]], log) -> Dict[str, object]:
    """Training fed by the real loader: the dataset (--data-root, else the built-in one) read
    through ``make_loader`` with ``loader_workers`` processes, the paper's augmentation on the
    device (``Preprocess.train``) and the grouped net's training step, as ``alexnet train``
    runs them. Beside it, the same net's training step on a synthetic batch (the results row)
    and the loader with the augmentation alone, so the verdict says which one is the limit."""
    from ..data import load_or_compute_stats, make_loader, open_dataset, resolve_data_root
    from ..train.evaluate import Preprocess

    device = parse_devices(settings.devices)[1]
    reason = unavailable([device])
    if reason:
        return {"status": "not run", "reason": reason}
    batch = settings.batch_sizes[0]
    precision = settings.precisions[0]
    try:
        root = resolve_data_root(settings.data_root)
        dataset = open_dataset(root, "train")
        stats = load_or_compute_stats(root, workers=settings.loader_workers, progress=False).to(device)
    except AlexNetError as error:
        return {"status": "failed", "reason": str(error)}
    steps = settings.warmup + settings.steps * settings.repeats
    if len(dataset) < steps * batch:
        steps = len(dataset) // batch
    if steps <= settings.warmup:
        return {"status": "not run", "reason": f"{root}: {len(dataset)} training images give fewer than "
                                               f"{settings.warmup + 1} batches of {batch}"}
    dtype = measure.DTYPES[precision]
    amp = None if dtype == torch.float32 else dtype
    preprocess = Preprocess(stats=stats)
    setup = Setup("grouped", (device,), settings.lrn_impl if settings.lrn_impl != "both" else "fast", False, False)
    log(f"end to end: {len(dataset)} images from {root}, batch {batch}, {settings.loader_workers} workers")

    def timed(step: Callable[[torch.Tensor, torch.Tensor], object]) -> float:
        generator = torch.Generator(device).manual_seed(settings.seed)
        loader = make_loader(dataset, batch, shuffle=True, seed=settings.seed, workers=settings.loader_workers,
                             drop_last=True, pin_memory=device.type == "cuda")
        start = None
        for i, (images, labels) in enumerate(loader):
            if i == settings.warmup:
                measure.synchronize([device])
                start = time.perf_counter()
            if i == steps:
                break
            step(preprocess.train(images.to(device, non_blocking=True), generator), labels.to(device))
        measure.synchronize([device])
        return (steps - settings.warmup) * batch / (time.perf_counter() - start)

    model = build(setup, settings.seed)
    optimizer = paper_sgd(model)
    model.train()
    training = timed(lambda x, y: train_step(model, x, y, optimizer, amp_dtype=amp))
    del model, optimizer
    loading = timed(lambda x, y: x.sum())  # the same batches and augmentation, no model
    synthetic = _find(rows, model="grouped", devices=[str(device)], mode="train", batch_size=batch,
                      precision=precision, lrn_impl=setup.lrn_impl, channels_last=False, compile=False)
    model_only = synthetic["images_per_s"]["median"] if synthetic else None
    if model_only is None:
        verdict = "no synthetic-input row of the grouped net to compare with"
    elif loading < model_only:
        verdict = "the loader is the limit: it reads fewer images per second than the model trains on"
    else:
        verdict = "the model is the limit: the loader reads faster than the model trains"
    return {"status": "ok", "data_root": str(root), "images": len(dataset), **setup.describe(),
            "batch_size": batch, "precision": precision, "workers": settings.loader_workers,
            "timed_steps": steps - settings.warmup, "warmup_steps": settings.warmup,
            "train_images_per_s": training, "loader_images_per_s": loading,
            "synthetic_train_images_per_s": model_only,
            "fraction_of_synthetic": training / model_only if model_only else None, "verdict": verdict}


# -- the whole run ---------------------------------------------------------------------------

def run_benchmark(settings: Settings, log: Callable[[str], None] = lambda message: None,
                  command: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Plan, measure and evaluate; returns the JSON-ready results."""
    started = time.time()
    settings = settings.resolved(gpu=uses_gpu(settings.devices))
    cases = plan(settings)
    if settings.flush_denormal:
        measure.set_flush_denormal(True)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    try:
        pairs = sorted({(a.index or 0, b.index or 0) for c in cases if c.setup.model == "towers"
                        for a, b in [c.setup.devices] if a.type == b.type == "cuda" and a != b
                        and not unavailable(c.setup.devices)})
        pairs = [p for a, b in pairs for p in ((a, b), (b, a))]
        env = measure.environment(pairs)
        runnable = [c for c in cases if why_not_run(c) is None]
        matmul = prepare_matmul(runnable, settings, log)
        rows, runners = run_models(cases, settings, matmul, log)
        matmul = _matmul_results(matmul)
        for row in rows:
            row["device_names"] = [measure.device_name(torch.device(d)) if not unavailable([torch.device(d)])
                                   else None for d in row["devices"]]
            if row["model"] == "towers" and len(set(row["devices"])) == 2:
                row["peer_access"] = _peer(env, row["devices"])
        single = parse_devices(settings.devices)[1]
        lrn_rows = run_lrn(settings, single, log) if settings.lrn_bench else []
        profile = _run_profile(settings, cases, rows, runners, log)
        del runners
        gc.collect()
        loaders = (run_loaders(settings, settings.batch_sizes[0]) if settings.loaders
                   else {"status": "not requested", "reason": "run with --loaders (the command's default) to measure the data loaders"})
        end_to_end = (run_end_to_end(settings, rows, log) if settings.loaders
                      else {"status": "not requested", "reason": "run with --loaders (the command's default) to train from the real loader"})
        targets = evaluate_targets(rows, lrn_rows, env)
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
        if settings.flush_denormal:
            measure.set_flush_denormal(False)
    return {
        "schema": SCHEMA,
        "command": list(command) if command is not None else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "load_average_at_end": measure.load_average(),
        "environment": env,
        "settings": settings.as_dict(),
        "matmul": list(matmul.values()),
        "results": rows,
        "lrn": lrn_rows,
        "profile": profile,
        "loaders": loaders,
        "end_to_end": end_to_end,
        "targets": targets,
    }


def _peer(env, devices) -> Optional[bool]:
    a, b = (torch.device(d) for d in devices)
    if a.type != "cuda" or b.type != "cuda":
        return None
    for entry in env["cuda"].get("peer_access", []):
        if entry["from"] == str(a) and entry["to"] == str(b):
            return entry["enabled"]
    return None


def _run_profile(settings, cases, rows, runners, log) -> Dict[str, object]:
    if settings.profile is None:
        return {"status": "not requested"}
    for case, row in zip(cases, rows):
        if case.setup.model == settings.profile and case.mode == "train" and row["status"] == "ok":
            break
    else:
        return {"status": "not run", "reason": f"no training case of {settings.profile!r} ran in this benchmark"}
    runner = runners[case.setup]
    log(f"profile: {_label(case)}")
    runner.set_mode(case)
    # The eager model: hooks and the profiler's scopes do not survive torch.compile.
    images, labels = runner.batch(case.batch_size)
    dtype = measure.DTYPES[case.precision]
    amp = None if dtype == torch.float32 else dtype
    scaler = runner.scalers.get("fp16")

    def step():
        return train_step(runner.model, images, labels, runner.optimizer, amp_dtype=amp, scaler=scaler)

    result = profile_layers(runner.model, step, case.setup.devices, steps=settings.profile_steps)
    return {"status": "ok", **case.describe(), "compile": False, **result}


def save(results: Dict[str, object], path) -> Path:
    def write(tmp):
        Path(tmp).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return write_atomically(path, write)


def command_line() -> List[str]:
    return ["alexnet", *sys.argv[1:]] if sys.argv else []
