"""Timing the cases: building each model once, warming it up (peak memory), then timed blocks
of every case in interleaved rounds, with the transfer counters and the matrix-multiply
ceiling read in the same rounds; and the per-layer profile of one case."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ...model.build import build_model
from ...model.spec import CROP, resolve
from ...precision import DTYPES, autocast_context, autocast_dtype
from ...train.optim import paper_sgd
from ...train.step import train_step
from . import measure
from .plan import BenchSettings, Case, Setup, why_not_run
from .profile import profile_layers

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
        return resolve(variant=setup.variant).macs
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
        amp = autocast_dtype(case.precision)
        model = self.run_model
        if case.mode == "train":
            scaler = None
            if case.precision == "fp16":
                # fp16 training needs loss scaling; GradScaler reads an inf/NaN flag on the host
                # once per step, as real fp16 training does.
                scaler = self.scalers.setdefault("fp16", torch.amp.GradScaler("cuda"))

            def train():
                return train_step(model, images, labels, self.optimizer, amp_dtype=amp, scaler=scaler).loss
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
    return {**case.as_dict(), "status": status, "reason": reason}


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
    achieved = flops_per_image * measure.median_spread(ips)["median"] / 1e12
    row.update({
        "ms_per_step": measure.median_spread(ms),
        "images_per_s": measure.median_spread(ips),
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


class MatmulCeilings:
    """The matrix-multiply ceiling for every (device, precision) the runnable cases use: a
    :class:`measure.MatmulRate` each (or a failure entry), sampled once when built and then
    once per timed round, so the ceiling sees the same machine as the figures beside it."""

    def __init__(self, cases: List[Case], settings: BenchSettings, log: Callable[[str], None]):
        wanted = {}
        for case in cases:
            for device in case.setup.devices:
                wanted.setdefault(_matmul_key(device, case.precision), (device, case.precision))
        self.rates: Dict[str, object] = {}
        for key, (device, precision) in wanted.items():
            log(f"matmul ceiling on {device} in {precision}")
            try:
                self.rates[key] = measure.MatmulRate(device, DTYPES[precision], settings.matmul_size,
                                                     inner=20 if device.type == "cuda" else 1)
                self.rates[key].sample()
            except RuntimeError as error:  # e.g. a dtype the CPU's BLAS does not do
                self.rates[key] = {"device": str(device), "dtype": precision, "status": "failed",
                                   "reason": str(error)}

    def sample(self) -> None:
        for rate in self.rates.values():
            if isinstance(rate, measure.MatmulRate):
                rate.sample()

    def results(self) -> Dict[str, Dict[str, object]]:
        """Per (device, precision): the rate's median, min, max and samples, or why it failed."""
        return {key: m.result() if isinstance(m, measure.MatmulRate) else m for key, m in self.rates.items()}


def _ceiling(matmul: Dict[str, Dict[str, object]], case: Case) -> Optional[float]:
    """Sum of the matmul rates of the distinct devices the case uses."""
    total = 0.0
    for device in dict.fromkeys(case.setup.devices):
        entry = matmul.get(_matmul_key(device, case.precision), {})
        if "tflops" not in entry:
            return None
        total += entry["tflops"]["median"]
    return total


#: A case being timed: the case, its results row and its step.
Live = Tuple[Case, Dict[str, object], Callable[[], object]]


def run_models(cases: List[Case], settings: BenchSettings, ceilings: MatmulCeilings,
               log) -> Tuple[List[Dict[str, object]], Dict[Setup, Runner]]:
    """Warm up every runnable case (measuring its peak memory), then time all of them in
    interleaved rounds."""
    rows: List[Dict[str, object]] = []
    for case in cases:
        reason = why_not_run(case)
        rows.append(_row(case, "not run" if reason else "ok", reason))
    runners: Dict[Setup, Runner] = {}
    live: List[Live] = []
    for setup in dict.fromkeys(c.setup for c in cases):
        mine = [(c, r) for c, r in zip(cases, rows) if c.setup == setup and r["status"] == "ok"]
        if not mine:
            continue
        runner = _build_runner(setup, mine, settings.seed, log)
        if runner is not None:
            runners[setup] = runner
            live += _warm_up(runner, mine, settings.warmup, log)
    seconds, traffic = _timed_rounds(live, runners, ceilings, settings, log)
    matmul = ceilings.results()
    for case, row, _ in live:
        if row["status"] == "ok":
            _fill(row, case, runners[case.setup], seconds[id(row)], settings.steps, traffic[id(row)],
                  _ceiling(matmul, case))
        row.update(warmup_steps=settings.warmup, timed_steps=settings.steps, repeats=settings.repeats,
                   input="synthetic batch already on the device (data loading excluded)")
    return rows, runners


def _build_runner(setup: Setup, mine, seed: int, log) -> Optional[Runner]:
    """The setup's runner, or None with every one of its rows marked failed."""
    log(f"building {setup.model} on {', '.join(map(str, setup.devices))}")
    try:
        return Runner(setup, seed)
    except Exception as error:  # noqa: BLE001 - reported per case, the run goes on
        for _, row in mine:
            row.update(status="failed", reason=f"build: {type(error).__name__}: {error}")
        return None


def _warm_up(runner: Runner, mine, warmup: int, log) -> List[Live]:
    """The untimed steps of each of the runner's cases, with the peak memory they reach;
    returns the cases that ran, ready to be timed."""
    # Inference first: its peak memory then excludes the gradients and momentum buffers
    # that the first training step allocates.
    mine = sorted(mine, key=lambda cr: cr[0].mode != "inference")
    weights = _parameter_bytes(runner.model)
    live = []
    for case, row in mine:
        log(f"warm-up: {_label(case)}")
        memory = measure.PeakMemory(runner.setup.devices).start()
        try:
            runner.set_mode(case)
            fn = runner.step_fn(case)
            start = time.perf_counter()
            measure.time_blocks(fn, runner.setup.devices, warmup)
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
    return live


def _timed_rounds(live: List[Live], runners: Dict[Setup, Runner], ceilings: MatmulCeilings,
                  settings: BenchSettings, log) -> Tuple[Dict[int, List[float]], Dict[int, "_Traffic"]]:
    """``repeats`` rounds of one timed block of every live case, the ceilings sampled at the
    start of each; per row (by id): the blocks' seconds and the summed transfer counters."""
    seconds: Dict[int, List[float]] = {id(r): [] for _, r, _ in live}
    traffic: Dict[int, _Traffic] = {id(r): _Traffic() for _, r, _ in live}
    for round_ in range(settings.repeats):
        log(f"timed round {round_ + 1}/{settings.repeats} ({len(live)} cases x {settings.steps} steps)")
        ceilings.sample()
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
    return seconds, traffic


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


def find_row(rows, **want):
    """The first measured row whose settings are all ``want``, or None."""
    for row in rows:
        if row.get("status") == "ok" and all(row.get(k) == v for k, v in want.items()):
            return row
    return None


def run_profile(settings: BenchSettings, cases: List[Case], rows: List[Dict[str, object]],
                runners: Dict[Setup, "Runner"], log) -> Dict[str, object]:
    """Per-layer time of the ``--profile`` model's training step, on a runner already built."""
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
    amp = autocast_dtype(case.precision)
    scaler = runner.scalers.get("fp16")

    def step():
        return train_step(runner.model, images, labels, runner.optimizer, amp_dtype=amp, scaler=scaler).loss

    result = profile_layers(runner.model, step, case.setup.devices, steps=settings.profile_steps)
    return {"status": "ok", **case.as_dict(), "compile": False, **result}
