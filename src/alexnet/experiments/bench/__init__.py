"""``alexnet bench``: throughput, memory and cross-device traffic, measured side by side.

Every case is a net on its devices, run by one ``alexnet.runtime.Runtime`` of the sweep
(precision, memory format, LRN implementation, compiled or not), at a batch size, in one mode
(inference, or a full training step through :func:`alexnet.train.step.train_step`): warm-up
steps, then ``repeats`` timed blocks of ``steps`` steps, the blocks of all cases interleaved
(round 1 of every case, then round 2, ...) so that a slow moment on a shared machine spreads
over all of them; figures are medians over the blocks, with the min and max. Every device a
case uses is synchronised before and after each block, never inside it. Beside each figure:
peak memory, the bytes handed between towers (the model's own counters), the achieved FLOP/s
against a matrix multiply sampled in the same rounds, and every setting. A case this machine
cannot run is reported as not run, with the reason; nothing is estimated.

Modules: ``cases`` (what a run measures), ``runner`` (building, warming up, timing; the
per-layer ``profile``), ``lrn_alone``, ``loaders``, ``measure`` (synchronising, memory, the
matmul ceilings), ``tables`` (the report). ``tools/bench_targets.py`` judges a results JSON
against the project's speed targets; this package only measures.
"""

from __future__ import annotations

import datetime
import gc
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ... import machine
from ...data import resolve_data_root
from ...devices import unavailable
from . import measure
from .cases import DEFAULTS, MODELS, MODES, SWEPT, Bench, Case, cases_to_measure, placements, uses_gpu, why_not_run
from .loaders import run_end_to_end, run_loaders
from .lrn_alone import run_lrn_alone
from .runner import run_models, run_profile

SCHEMA = "alexnet-bench/2"  # 2: settings as the runtime sweep (1: the old options)

__all__ = ["DEFAULTS", "MODELS", "MODES", "SCHEMA", "SWEPT", "Bench", "Case", "cases_to_measure", "placements",
           "run_benchmark", "why_not_run"]

NOT_REQUESTED = {"status": "not requested", "reason": "run with --loaders (the command's default) to measure the "
                                                      "data loaders and train from the real loader"}


def run_benchmark(bench: Bench, log: Callable[[str], None] = lambda message: None,
                  command: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Measure every case of ``bench``; returns the JSON-ready results."""
    started = time.time()
    bench = bench.resolved(gpu=uses_gpu(bench.runtime.devices))
    if bench.loaders and bench.data_root is not None:
        # Only the loader sections read it, at the end: a wrong path is one DataError line now,
        # not a "failed" entry after minutes of timing (the built-in dataset is always there).
        resolve_data_root(bench.data_root)
    cases = cases_to_measure(bench)
    runnable = [c for c in cases if why_not_run(c) is None]
    if bench.flush_denormal:
        measure.set_flush_denormal(True)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bench.runtime.cudnn_benchmark
    try:
        # The machine (software, commit, CPU, GPUs and their peer access, load) and the kernel
        # settings this run measures under.
        env = {**machine.describe(_peer_pairs(runnable)), "kernel_settings": measure.kernel_settings()}
        ceilings = measure.MatmulCeilings(((d, c.precision) for c in runnable for d in c.devices),
                                          bench.matmul_size, log)
        rows, runners = run_models(cases, bench, ceilings, log)
        matmul = list(ceilings.results().values())
        del ceilings  # its matrices: the sections below run without them
        _describe_devices(rows, env)
        lrn = run_lrn_alone(bench, placements(bench.runtime.devices)[1].primary, log) if bench.lrn_bench else []
        profile = run_profile(bench, cases, rows, runners, log)
        del runners
        gc.collect()
        loaders = run_loaders(bench, bench.batch_sizes[0]) if bench.loaders else NOT_REQUESTED
        end_to_end = run_end_to_end(bench, rows, log) if bench.loaders else NOT_REQUESTED
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
        if bench.flush_denormal:
            measure.set_flush_denormal(False)
    return {"schema": SCHEMA, "command": list(command) if command is not None else None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": time.time() - started, "load_average_at_end": machine.load_average(),
            "environment": env, "settings": bench.as_dict(), "matmul": matmul, "results": rows, "lrn": lrn,
            "profile": profile, "loaders": loaders, "end_to_end": end_to_end}


def _peer_pairs(cases: List[Case]) -> List[tuple]:
    """Both directions between the two GPUs of every towers case: where peer access matters."""
    pairs = {(a.index or 0, b.index or 0) for c in cases if c.model == "towers" for a, b in [c.devices]
             if a.type == b.type == "cuda" and a != b}
    return sorted(pairs | {(b, a) for a, b in pairs})


def _describe_devices(rows: List[Dict[str, object]], env: Dict[str, object]) -> None:
    """Each row's device names, and for towers on two GPUs whether peer access is enabled."""
    peer = {(p["from"], p["to"]): p["enabled"] for p in env["cuda"].get("peer_access", [])}
    for row in rows:
        devices = [torch.device(d) for d in row["devices"]]
        row["device_names"] = [None if unavailable([d]) else machine.device_name(d) for d in devices]
        if row["model"] == "towers" and len(set(devices)) == 2:
            row["peer_access"] = peer.get(tuple(row["devices"]))

