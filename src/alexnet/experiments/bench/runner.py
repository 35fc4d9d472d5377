"""Timing the cases: each net built once, every case of it warmed up (its peak memory), then one
timed block of every case per round, with the transfer counters and the matmul ceilings read in
the same rounds; the LRN on its own; the per-layer profile of one case."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torchvision

from ...devices import unavailable
from ...model.build import build_model
from ...model.lrn import LRN_IMPLS, LocalResponseNorm
from ...model.spec import CROP, resolve
from ...precision import autocast_context, autocast_dtype
from ...train.optim import paper_sgd
from ...train.step import train_step
from . import measure
from .cases import Bench, Case, why_not_run
from .profile import profile_layers


class Runner:
    """One built net, shared by its cases: the model, the form its runtime runs it in (memory
    format, compiled), its optimizer and its synthetic batches."""

    def __init__(self, case: Case, seed: int):
        if case.model == "torchvision":
            torch.manual_seed(seed)
            self.model = torchvision.models.alexnet(weights=None).to(case.placement.primary)
        else:
            self.model = build_model(variant=case.variant, layout=case.placement.layout, devices=list(case.devices),
                                     seed=seed, lrn_impl=case.lrn_impl)
        # The layer table's count for the paper's nets; torchvision's is counted from its modules.
        self.macs = (resolve(variant=case.variant).macs if case.variant
                     else measure.count_macs(self.model, case.devices[0]))
        self.run_model = case.runtime.apply(self.model)
        self.optimizer = paper_sgd(self.model)
        self.weights: Dict[str, int] = {}
        for p in self.model.parameters():
            self.weights[str(p.device)] = self.weights.get(str(p.device), 0) + p.numel() * p.element_size()
        self.channels_last, self.seed = case.runtime.channels_last, seed
        self.inputs: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.scaler = None

    def batch(self, case: Case) -> Tuple[torch.Tensor, torch.Tensor]:
        """A synthetic batch on the first device: crops on the 0-255 scale minus the mean."""
        size = case.batch_size
        if size not in self.inputs:
            g = torch.Generator().manual_seed(self.seed + size)
            images = torch.randn(size, 3, CROP, CROP, generator=g) * 60
            labels = torch.randint(0, 1000, (size,), generator=g)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.inputs[size] = (images.to(case.devices[0]), labels.to(case.devices[0]))
        return self.inputs[size]

    def step(self, case: Case, eager: bool = False) -> Callable[[], object]:
        """One step of ``case`` (``eager``: the uncompiled net, for the profiler's hooks)."""
        images, labels = self.batch(case)
        amp = autocast_dtype(case.precision)
        model = self.model if eager else self.run_model
        if case.mode == "inference":
            def infer():
                with torch.inference_mode(), autocast_context(case.devices, amp):
                    return model(images)
            return infer
        if case.precision == "fp16" and self.scaler is None:
            # fp16 training needs loss scaling; GradScaler reads an inf/NaN flag on the host once
            # per step, as real fp16 training does.
            self.scaler = torch.amp.GradScaler("cuda")
        scaler = self.scaler if case.precision == "fp16" else None
        return lambda: train_step(model, images, labels, self.optimizer, amp_dtype=amp, scaler=scaler).loss

    def traffic(self) -> Optional[Dict[str, Dict[str, int]]]:
        """The towers' transfer counters since the last read (None: a net without towers)."""
        if not hasattr(self.model, "traffic"):
            return None
        counts = self.model.traffic()
        self.model.reset_traffic()
        return counts


@dataclass
class Timed:
    """A case being timed; ``traffic``: the transfer counts of its last block (every step sends the same)."""

    case: Case
    row: Dict[str, object]
    step: Callable[[], object]
    seconds: List[float] = field(default_factory=list)
    traffic: Optional[Dict[str, Dict[str, int]]] = None


def run_models(cases: List[Case], bench: Bench, ceilings: measure.MatmulCeilings,
               log) -> Tuple[List[Dict[str, object]], Dict[tuple, Runner]]:
    """Warm up every runnable case, then time all of them in interleaved rounds: the results
    rows, and the built nets by ``Case.net``."""
    reasons = [why_not_run(case) for case in cases]
    rows = [{**case.as_dict(), "status": "not run" if why else "ok", "reason": why}
            for case, why in zip(cases, reasons)]
    runners: Dict[tuple, Runner] = {}
    timed: List[Timed] = []
    for net in dict.fromkeys(c.net for c in cases):
        mine = [(c, r) for c, r in zip(cases, rows) if c.net == net and r["status"] == "ok"]
        if mine:
            log(f"building {mine[0][0].model} on {', '.join(map(str, net[1]))}")
            try:
                runners[net] = Runner(mine[0][0], bench.seed)
            except Exception as error:  # noqa: BLE001 - reported per case, the run goes on
                for _, row in mine:
                    row.update(status="failed", reason=f"build: {type(error).__name__}: {error}")
                continue
            timed += warm_up(runners[net], mine, bench.warmup, log)
    for round_ in range(bench.repeats):
        log(f"timed round {round_ + 1}/{bench.repeats} ({len(timed)} cases x {bench.steps} steps)")
        ceilings.sample()
        for t in (t for t in timed if t.row["status"] == "ok"):
            runner = runners[t.case.net]
            runner.model.train(t.case.mode == "train")
            runner.traffic()  # zero the counters: the other cases of the net counted since
            try:
                t.seconds.append(measure.time_blocks(t.step, t.case.devices, bench.steps))
            except Exception as error:  # noqa: BLE001
                _failed(t.row, error)
                continue
            t.traffic = runner.traffic()
    for t in timed:
        if t.row["status"] == "ok":
            fill(t, runners[t.case.net].macs, bench.steps, ceilings.ceiling(t.case.devices, t.case.precision))
        t.row.update(warmup_steps=bench.warmup, timed_steps=bench.steps, repeats=bench.repeats,
                     input="synthetic batch already on the device (data loading excluded)")
    return rows, runners


def _failed(row: Dict[str, object], error: Exception) -> None:
    row.update(status="failed", reason=f"{type(error).__name__}: {error}".splitlines()[0])


def warm_up(runner: Runner, mine: List[Tuple[Case, Dict]], warmup: int, log) -> List[Timed]:
    """The untimed steps of each of the net's cases, with their peak memory: the cases that ran."""
    # Inference first: its peak memory then excludes the gradients and momentum buffers that
    # the first training step allocates.
    timed = []
    for case, row in sorted(mine, key=lambda cr: cr[0].mode != "inference"):
        log(f"warm-up: {label(case)}")
        try:
            with measure.peak_memory(case.devices) as memory:
                runner.model.train(case.mode == "train")
                step = runner.step(case)
                start = time.perf_counter()
                measure.time_blocks(step, case.devices, warmup)
                row["warmup_s"] = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - reported per case, the run goes on
            _failed(row, error)
            continue
        weights = runner.weights
        row["peak_memory"] = {device: {
            "bytes": None if v["bytes"] is None else weights.get(device, 0) + v["bytes"],
            "parameters_bytes": weights.get(device, 0), "above_parameters_bytes": v["bytes"], "method": v["method"]}
            for device, v in memory.items()}
        timed.append(Timed(case, row, step))
    return timed


def fill(t: Timed, macs: int, steps: int, ceiling: Optional[float]) -> None:
    """The row's figures: medians over the blocks, the achieved rate against the ceiling, traffic."""
    case = t.case
    ips = measure.median_spread([case.batch_size / (s / steps) for s in t.seconds])
    # Training counts forward + the two backward products: 3x the forward pass, the usual convention.
    flops_per_image = 2 * macs * (3 if case.mode == "train" else 1)
    achieved = flops_per_image * ips["median"] / 1e12
    t.row.update({
        "ms_per_step": measure.median_spread([s / steps * 1e3 for s in t.seconds]), "images_per_s": ips,
        "macs_per_image": macs, "flops_per_image": flops_per_image, "achieved_tflops": achieved,
        "matmul_tflops": ceiling, "fraction_of_matmul": achieved / ceiling if ceiling else None,
        "traffic": traffic_summary(t, steps)})


def traffic_summary(t: Timed, steps: int) -> Dict[str, object]:
    if not t.traffic:
        return {"counted": False, "reason": "single device: no transfer points"}
    if t.case.runtime.compile:
        return {"counted": False, "reason": "the transfer counters are skipped under torch.compile; "
                                            "run with --compile off for the counts"}
    per_step = {name: {k: c[k] / steps for k in ("bytes", "copied_bytes")} for name, c in t.traffic.items()}
    handed = sum(c["bytes"] for c in per_step.values())
    copied = sum(c["copied_bytes"] for c in per_step.values())
    batch = t.case.batch_size
    return {
        "counted": True, "forward_passes": steps,
        # Everything handed from one tower to the other, counted by the model: what crosses
        # between two GPUs (the input hand-off included); of it, what changed device here.
        "handed_over_bytes_per_step": handed, "handed_over_bytes_per_image": handed / batch,
        "crossed_devices_bytes_per_step": copied, "crossed_devices_bytes_per_image": copied / batch,
        "points_bytes_per_step": {name: c["bytes"] for name, c in per_step.items()},
        **({"note": "forward pass only: in training the gradients of the exchanged halves travel back the same "
                    "way (not counted)"} if t.case.mode == "train" else {})}


def label(case: Case) -> str:
    words = [case.model, ",".join(map(str, case.devices)), f"b{case.batch_size}", case.precision, case.mode]
    words += [f"lrn={case.lrn_impl}"] if case.lrn_impl else []
    return " ".join(words + ["channels_last"] * case.runtime.channels_last + ["compiled"] * case.runtime.compile)


def run_profile(bench: Bench, cases: List[Case], rows: List[Dict[str, object]],
                runners: Dict[tuple, Runner], log) -> Dict[str, object]:
    """Per-layer time of the ``--profile`` net's training step, on a net already built (eager:
    hooks and the profiler's scopes do not survive torch.compile)."""
    if bench.profile is None:
        return {"status": "not requested"}
    case = next((c for c, r in zip(cases, rows) if c.model == bench.profile and c.mode == "train"
                 and r["status"] == "ok"), None)
    if case is None:
        return {"status": "not run", "reason": f"no training case of {bench.profile!r} ran in this benchmark"}
    log(f"profile: {label(case)}")
    runner = runners[case.net]
    runner.model.train()
    result = profile_layers(runner.model, runner.step(case, eager=True), case.devices, steps=bench.profile_steps)
    return {"status": "ok", **case.as_dict(), "compile": False, **result}


def run_lrn_alone(bench: Bench, device: torch.device, log) -> List[Dict[str, object]]:
    """The fast LRN against the stock one at the paper's LRN inputs (from the layer table), forward
    + backward in fp32: time (interleaved repeats), peak memory, bytes kept for backward; on the
    fast one's row, its speed-up and the largest differences in value and gradient."""
    reason, spec = unavailable([device]), resolve()
    rows = []
    for shape in ((row.out_channels, row.out_size, row.out_size) for row in spec.layers if row.layer.lrn):
        full = (bench.lrn_batch, *shape)
        base = {"shape": list(full), "groups": spec.towers, "device": str(device), "dtype": "fp32",
                "pass": "forward+backward", "repeats": bench.lrn_repeats}
        if reason:
            rows += [{**base, "impl": impl, "status": "not run", "reason": reason} for impl in LRN_IMPLS]
            continue
        g = torch.Generator().manual_seed(bench.seed)
        x = (torch.randn(full, generator=g) * 30).relu_().to(device)  # ReLU outputs on conv1's and conv2's scale
        grad = torch.randn(full, generator=g).to(device)
        modules = {impl: LocalResponseNorm(shape[0], groups=spec.towers, impl=impl) for impl in LRN_IMPLS}

        def forward_backward(impl: str) -> Tuple[torch.Tensor, torch.Tensor]:
            leaf = x.detach().requires_grad_(True)
            y = modules[impl](leaf)
            y.backward(grad)
            return y.detach(), leaf.grad

        by_impl, outputs = {}, {}
        for impl in LRN_IMPLS:
            log(f"LRN {impl} {full}: warm-up and memory")
            with measure.peak_memory([device]) as memory, measure.saved_for_backward() as saved:
                outputs[impl] = forward_backward(impl)
            by_impl[impl] = {**base, "impl": impl, "status": "ok", "peak_memory": memory[str(device)],
                             "saved_for_backward_bytes": saved["bytes"], "ms": []}
        (yf, gf), (ys, gs) = outputs["fast"], outputs["stock"]
        by_impl["fast"].update(
            max_rel_diff_value=float(((yf - ys).abs() / ys.abs().clamp_min(1e-30)).max()),
            max_diff_grad_over_max_grad=float((gf - gs).abs().max() / gs.abs().max().clamp_min(1e-30)))
        del outputs, yf, gf, ys, gs
        for r in range(bench.lrn_repeats):
            log(f"LRN {full}: round {r + 1}/{bench.lrn_repeats}")
            for impl in LRN_IMPLS:
                by_impl[impl]["ms"].append(measure.time_blocks(lambda: forward_backward(impl), [device], 1) * 1e3)
        for impl in LRN_IMPLS:
            by_impl[impl]["ms"] = measure.median_spread(by_impl[impl]["ms"])
        by_impl["fast"]["speedup_vs_stock"] = by_impl["stock"]["ms"]["median"] / by_impl["fast"]["ms"]["median"]
        rows += [by_impl[impl] for impl in LRN_IMPLS]
        del x, grad
    return rows
