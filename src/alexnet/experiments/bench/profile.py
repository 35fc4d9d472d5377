"""Where a training step's time goes, layer by layer, from torch's profiler.

Every leaf module's forward is wrapped in a ``record_function`` scope named after it, so the
forward time of ``conv1`` (or ``towers.1.conv3``, ``features.0``) is the time inside its
scope. Backward work is tied to the forward op that created it by autograd's sequence
number, so ``conv1``'s backward is the autograd node its forward created. Work outside any
module (the functional ReLUs, the loss, the optimizer) is listed under the op's own name.

On the CPU the times are the host's; on GPUs they are device (kernel) time, summed over
every device the model uses. The profiler adds overhead of its own, so shares are the
useful figure; the absolute times come from the timed runs.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from .measure import synchronize

SCOPE = "layer::"
BACKWARD = "autograd::engine::evaluate_function: "
OPTIMIZER = "Optimizer."
STEP = "bench::step"


class _LayerScopes:
    """Global forward pre/post hooks that open and close one profiler scope per leaf module
    of ``model``. Global, so the modules' own hook lists stay empty: a module that checks
    them (the LRN blocks' fused CPU path does) behaves as it does unprofiled."""

    def __init__(self, model: nn.Module):
        self.names: Dict[int, str] = {}
        self.types: Dict[str, str] = OrderedDict()
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                self.names[id(module)] = name
                self.types[name] = type(module).__name__
        self.open: List[record_function] = []
        self.handles = [
            nn.modules.module.register_module_forward_pre_hook(self._enter),
            nn.modules.module.register_module_forward_hook(self._exit),
        ]

    def _enter(self, module, inputs):
        name = self.names.get(id(module))
        if name is not None:
            scope = record_function(SCOPE + name)
            scope.__enter__()
            self.open.append(scope)

    def _exit(self, module, inputs, output):
        if id(module) in self.names:
            self.open.pop().__exit__(None, None, None)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _scope_of(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(SCOPE):
            return parent.name[len(SCOPE):]
        parent = parent.cpu_parent
    return ""


def _duration(event, on_device: bool) -> float:
    """Microseconds: kernel time (the event's and its children's) on GPUs, host time on CPU."""
    if on_device:
        return float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
    return float(event.cpu_time_total)


def profile_layers(model: nn.Module, step: Callable[[], object], devices: Sequence[torch.device],
                   steps: int = 2) -> Dict[str, object]:
    """Profile ``steps`` calls of ``step`` (one training step of ``model``) and break the
    time down per module, forward and backward. Returns rows in network order."""
    on_device = any(d.type == "cuda" for d in devices)
    events, wall, types = _record(model, step, devices, steps, on_device)
    forward, kinds, creator = _forward_times(events, types, on_device)
    backward = _backward_times(events, creator, kinds, on_device)
    rows = _rows(forward, backward, kinds, steps)
    attributed = sum(row["total_ms"] for row in rows)
    for row in rows:
        row["share"] = row["total_ms"] / attributed if attributed > 0 else None
    return {
        "steps": steps,
        "time": "device (kernel) time, summed over devices" if on_device else "host time",
        "step_ms": wall / steps * 1e3,  # wall clock per profiled step, profiler overhead included
        "attributed_ms": attributed,
        "rows": rows,
        "note": "profiled after the timed runs, with the profiler's own overhead; backward work "
                "is attributed to the module whose forward created it (autograd sequence numbers); "
                "share is of the attributed time",
    }


def _record(model: nn.Module, step: Callable[[], object], devices: Sequence[torch.device], steps: int,
            on_device: bool) -> Tuple[list, float, Dict[str, str]]:
    """One warm step, then ``steps`` profiled ones inside layer scopes: (the profiler's events
    in start order, the profiled steps' wall-clock seconds, each leaf module's type by name)."""
    # Kineto logs an error line when it finds no GPU; it reads this when it first starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    scopes = _LayerScopes(model)
    try:
        step()  # warm: the first profiled step would otherwise carry one-off costs
        synchronize(devices)
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                with record_function(STEP):
                    step()
            synchronize(devices)
            wall = time.perf_counter() - start
    finally:
        scopes.remove()
    return sorted(prof.events(), key=lambda e: e.time_range.start), wall, scopes.types


def _forward_times(events, types: Dict[str, str], on_device: bool):
    """Microseconds of forward work per row, in the order the step first reaches them; each
    row's kind; and which row's forward created each autograd node (by sequence number)."""
    forward: Dict[str, float] = OrderedDict()
    kinds: Dict[str, str] = {}
    creator: Dict[int, str] = {}
    last = "input"
    for event in events:
        top = event.cpu_parent is not None and event.cpu_parent.name == STEP
        label = None
        if event.name == STEP:
            last = "input"
        elif event.name.startswith(SCOPE):
            label = last = event.name[len(SCOPE):]
            kinds[label] = types.get(label, "")
        elif event.name.startswith(OPTIMIZER):
            label = event.name.split("#")[0]  # Optimizer.step, Optimizer.zero_grad
            kinds[label] = "optimizer"
        elif top and not event.name.startswith(BACKWARD):
            # A functional op or autograd Function outside any module (the ReLUs, the fused
            # LRN blocks, the loss): named after the module it follows.
            label = f"{event.name} after {last}"
            kinds[label] = "op" if event.name.startswith("aten::") else "function"
        if label is not None:
            forward[label] = forward.get(label, 0.0) + _duration(event, on_device)
        # The last op to hold a sequence number is the one whose autograd node carries it.
        if event.sequence_nr is not None and event.sequence_nr >= 0 and not event.name.startswith(BACKWARD):
            scope = _scope_of(event)
            if scope:
                creator[event.sequence_nr] = scope
            elif label is not None and top:
                creator[event.sequence_nr] = label
    return forward, kinds, creator


def _backward_times(events, creator: Dict[int, str], kinds: Dict[str, str], on_device: bool) -> Dict[str, float]:
    """Microseconds of backward work per row: each autograd node's time goes to the row whose
    forward created it (else to the node's own name, added to ``kinds`` as autograd)."""
    backward: Dict[str, float] = OrderedDict()
    for event in events:
        if event.name.startswith(BACKWARD):
            node = event.name[len(BACKWARD):]
            name = creator.get(event.sequence_nr, node)
            backward[name] = backward.get(name, 0.0) + _duration(event, on_device)
            kinds.setdefault(name, "autograd")
    return backward


def _rows(forward: Dict[str, float], backward: Dict[str, float], kinds: Dict[str, str],
          steps: int) -> List[Dict[str, object]]:
    """One row per name, forward rows first in step order: milliseconds per step."""
    rows = []
    for name in OrderedDict.fromkeys(list(forward) + list(backward)):
        f, b = forward.get(name, 0.0) / steps / 1e3, backward.get(name, 0.0) / steps / 1e3
        rows.append({"name": name, "type": kinds.get(name, ""), "forward_ms": f, "backward_ms": b,
                     "total_ms": f + b})
    return rows
