"""Where a training step's time goes, layer by layer, from torch's profiler.

Each leaf module's forward runs inside a ``record_function`` scope named after it; backward work
is tied to the forward op that created it by autograd's sequence number. Work outside any module
(the functional ReLUs, the loss, the optimizer) is listed under the op's own name. Times are the
host's on the CPU, kernel time summed over devices on GPUs; the profiler adds overhead of its
own, so shares are the useful figure (the absolute times come from the timed runs).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from typing import Callable, Dict, Sequence

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from .measure import synchronize

SCOPE = "layer::"
BACKWARD = "autograd::engine::evaluate_function: "
OPTIMIZER = "Optimizer."
STEP = "bench::step"


@contextlib.contextmanager
def _layer_scopes(model: nn.Module):
    """One profiler scope per leaf module of ``model``, opened by global forward hooks: the modules'
    own hook lists stay empty, so a module that checks them (the LRN blocks' fused CPU path does)
    behaves as it does unprofiled. Yields each leaf module's type by name."""
    names = {id(module): name for name, module in model.named_modules()
             if name and next(module.children(), None) is None}
    scopes = []

    def enter(module, inputs):
        if id(module) in names:
            scopes.append(record_function(SCOPE + names[id(module)]))
            scopes[-1].__enter__()

    def leave(module, inputs, output):
        if id(module) in names:
            scopes.pop().__exit__(None, None, None)

    handles = [nn.modules.module.register_module_forward_pre_hook(enter),
               nn.modules.module.register_module_forward_hook(leave)]
    try:
        yield {name: type(module).__name__ for name, module in model.named_modules() if id(module) in names}
    finally:
        for handle in handles:
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
    """Profile ``steps`` calls of ``step`` (one training step of ``model``) after a warm one: the
    time per module, forward and backward, in rows in network order."""
    on_device = any(d.type == "cuda" for d in devices)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # else Kineto logs an error line where it finds no GPU
    with _layer_scopes(model) as types:
        step()  # warm: the first profiled step would otherwise carry one-off costs
        synchronize(devices)
        with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * on_device) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                with record_function(STEP):
                    step()
            synchronize(devices)
            wall = time.perf_counter() - start
    forward, backward, kinds = _attribute(sorted(prof.events(), key=lambda e: e.time_range.start), types, on_device)
    rows = []
    for name in OrderedDict.fromkeys(list(forward) + list(backward)):  # forward rows first, in step order
        f, b = forward.get(name, 0.0) / steps / 1e3, backward.get(name, 0.0) / steps / 1e3
        rows.append({"name": name, "type": kinds.get(name, ""), "forward_ms": f, "backward_ms": b, "total_ms": f + b})
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


def _attribute(events, types: Dict[str, str], on_device: bool):
    """Microseconds of forward and of backward work per row, in the order the step first reaches
    them, and each row's kind. An autograd node's time goes to the row whose forward created it
    (by sequence number), else to the node's own name."""
    forward: Dict[str, float] = OrderedDict()
    backward: Dict[str, float] = OrderedDict()
    kinds: Dict[str, str] = {}
    creator: Dict[int, str] = {}
    last = "input"
    for event in events:
        top = event.cpu_parent is not None and event.cpu_parent.name == STEP
        label = None
        if event.name.startswith(BACKWARD):
            name = creator.get(event.sequence_nr, event.name[len(BACKWARD):])
            backward[name] = backward.get(name, 0.0) + _duration(event, on_device)
            kinds.setdefault(name, "autograd")
            continue
        if event.name == STEP:
            last = "input"
        elif event.name.startswith(SCOPE):
            label = last = event.name[len(SCOPE):]
            kinds[label] = types.get(label, "")
        elif event.name.startswith(OPTIMIZER):
            label = event.name.split("#")[0]  # Optimizer.step, Optimizer.zero_grad
            kinds[label] = "optimizer"
        elif top:
            # A functional op or autograd Function outside any module (the ReLUs, the fused
            # LRN blocks, the loss): named after the module it follows.
            label = f"{event.name} after {last}"
            kinds[label] = "op" if event.name.startswith("aten::") else "function"
        if label is not None:
            forward[label] = forward.get(label, 0.0) + _duration(event, on_device)
        # The last op to hold a sequence number is the one whose autograd node carries it.
        if event.sequence_nr is not None and event.sequence_nr >= 0:
            scope = _scope_of(event)
            if scope:
                creator[event.sequence_nr] = scope
            elif label is not None and top:
                creator[event.sequence_nr] = label
    return forward, backward, kinds
