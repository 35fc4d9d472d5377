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
blocks), and every setting. A configuration this machine cannot run (two GPUs on a CPU-only
machine) is reported as not run, with the reason; nothing is estimated. Timing syncs every
device a configuration uses before and after each timed block and never inside it.

The modules, in the order a run uses them:

    plan      BenchSettings, the cases they expand to, which ones can run here
    runner    building, warming up and timing the models; the matmul ceilings; the
              per-layer profile
    lrn       the fast LRN against the stock one
    loaders   the data loaders side by side, and training fed by the real loader
    tables    the results as plain-text tables
    measure   synchronising, peak memory, the matmul rate, the kernel settings

The machine is described by :mod:`alexnet.machine`, precisions map to dtypes through
:mod:`alexnet.precision`, and ``--devices`` follows :mod:`alexnet.devices`, as in every other
command.

The project's speed promises (targets) are checked against a results JSON by
``tools/bench_targets.py``, not here: this package measures, it does not judge.
"""

from __future__ import annotations

import datetime
import gc
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ... import machine
from ...data import resolve_data_root
from ...devices import unavailable
from ...files import write_atomically
from . import measure
from .loaders import run_end_to_end, run_loaders
from .lrn import run_lrn
from .plan import CHOICES, MODELS, MODES, PRECISIONS, BenchSettings, placements, plan, uses_gpu, why_not_run
from .runner import MatmulCeilings, run_models, run_profile

SCHEMA = "alexnet-bench/1"

__all__ = ["CHOICES", "MODELS", "MODES", "PRECISIONS", "SCHEMA", "BenchSettings", "command_line", "environment",
           "placements", "plan", "run_benchmark", "save", "why_not_run"]


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] = lambda message: None,
                  command: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Plan, measure and evaluate; returns the JSON-ready results."""
    started = time.time()
    settings = settings.resolved(gpu=uses_gpu(settings.devices))
    if settings.loaders and settings.data_root is not None:
        # Only the loader sections read it, at the end: a wrong path is one DataError line now,
        # not a "failed" entry after minutes of timing (the built-in dataset is always there).
        resolve_data_root(settings.data_root)
    cases = plan(settings)
    if settings.flush_denormal:
        measure.set_flush_denormal(True)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    try:
        env = environment(_gpu_pairs(cases))
        ceilings = MatmulCeilings([c for c in cases if why_not_run(c) is None], settings, log)
        rows, runners = run_models(cases, settings, ceilings, log)
        matmul = ceilings.results()
        del ceilings  # its matrices: the LRN and profile sections run without them
        for row in rows:
            row["device_names"] = [machine.device_name(torch.device(d)) if not unavailable([torch.device(d)])
                                   else None for d in row["devices"]]
            if row["model"] == "towers" and len(set(row["devices"])) == 2:
                row["peer_access"] = _peer(env, row["devices"])
        single = placements(settings.devices)[1].primary
        lrn_rows = run_lrn(settings, single, log) if settings.lrn_bench else []
        profile = run_profile(settings, cases, rows, runners, log)
        del runners
        gc.collect()
        loaders = (run_loaders(settings, settings.batch_sizes[0]) if settings.loaders
                   else {"status": "not requested", "reason": "run with --loaders (the command's default) to measure the data loaders"})
        end_to_end = (run_end_to_end(settings, rows, log) if settings.loaders
                      else {"status": "not requested", "reason": "run with --loaders (the command's default) to train from the real loader"})
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
        if settings.flush_denormal:
            measure.set_flush_denormal(False)
    return {
        "schema": SCHEMA,
        "command": list(command) if command is not None else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "load_average_at_end": machine.load_average(),
        "environment": env,
        "settings": settings.as_dict(),
        "matmul": list(matmul.values()),
        "results": rows,
        "lrn": lrn_rows,
        "profile": profile,
        "loaders": loaders,
        "end_to_end": end_to_end,
    }


def environment(cuda_pairs: Sequence[Sequence[int]] = ()) -> Dict[str, object]:
    """The machine (``alexnet.machine.describe``: software, commit, CPU, GPUs and peer access
    between ``cuda_pairs``, load) and the kernel settings this run measures under."""
    return {**machine.describe(cuda_pairs), "kernel_settings": measure.kernel_settings()}


def _gpu_pairs(cases) -> List[tuple]:
    """Both directions between the two GPUs of every runnable towers case: where peer access matters."""
    pairs = sorted({(a.index or 0, b.index or 0) for c in cases if c.setup.model == "towers"
                    for a, b in [c.setup.devices] if a.type == b.type == "cuda" and a != b
                    and not unavailable(c.setup.devices)})
    return [p for a, b in pairs for p in ((a, b), (b, a))]


def _peer(env, devices) -> Optional[bool]:
    a, b = (torch.device(d) for d in devices)
    if a.type != "cuda" or b.type != "cuda":
        return None
    for entry in env["cuda"].get("peer_access", []):
        if entry["from"] == str(a) and entry["to"] == str(b):
            return entry["enabled"]
    return None


def save(results: Dict[str, object], path) -> Path:
    def write(tmp):
        Path(tmp).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return write_atomically(path, write)


def command_line() -> List[str]:
    return ["alexnet", *sys.argv[1:]] if sys.argv else []
