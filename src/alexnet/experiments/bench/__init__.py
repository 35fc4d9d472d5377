"""``alexnet bench``: throughput, memory and cross-device traffic, measured side by side.

Each case is a net on its devices, run by one ``Runtime`` of the sweep at a batch size, in
inference or a full training step: warm-up steps, then ``repeats`` timed blocks of ``steps``
steps, the blocks of all cases interleaved so that a slow moment on a shared machine spreads
over all of them; figures are medians over the blocks, with the min and max. Beside each:
peak memory, the bytes handed between towers, the achieved FLOP/s against a matrix multiply
sampled in the same rounds, and every setting. A case this machine cannot run is reported as
not run, with the reason. ``tools/bench_targets.py`` judges the results against the targets.
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
from .runner import run_lrn_alone, run_models, run_profile

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
        # A wrong path is one DataError line now, not a "failed" section after minutes of timing.
        resolve_data_root(bench.data_root)
    cases = cases_to_measure(bench)
    runnable = [c for c in cases if why_not_run(c) is None]
    # Subnormal floats as zero on the CPU: repeated steps on one synthetic batch drive the softmax
    # into underflow, and subnormal arithmetic is many times slower on x86.
    flushed = bench.flush_denormal and bool(torch.set_flush_denormal(True))
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bench.runtime.cudnn_benchmark
    try:
        env = {**machine.describe(_peer_pairs(runnable)), "kernel_settings": measure.kernel_settings(flushed)}
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
        if flushed:
            torch.set_flush_denormal(False)
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
