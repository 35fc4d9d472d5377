"""The fast LRN against the stock one, on its own, at AlexNet's LRN inputs (from the layer table)."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ...devices import unavailable
from ...model.lrn import LRN_IMPLS, LocalResponseNorm
from ...model.spec import resolve
from . import measure
from .plan import BenchSettings


def lrn_inputs() -> Tuple[Tuple[Tuple[int, int, int], ...], int]:
    """The paper's LRN inputs per image, from the layer table (each layer with LRN: its
    output maps and size, over both towers), and the towers they are split between."""
    spec = resolve()
    shapes = tuple((row.out_channels, row.out_size, row.out_size) for row in spec.layers if row.layer.lrn)
    return shapes, spec.towers


def run_lrn(settings: BenchSettings, device: torch.device, log) -> List[Dict[str, object]]:
    """The fast LRN against the stock one at AlexNet's LRN inputs, forward + backward: time
    (interleaved repeats), peak memory, bytes kept for backward, and the largest difference
    between their values and gradients."""
    reason = unavailable([device])
    shapes, groups = lrn_inputs()
    rows = []
    for shape in shapes:
        full = (settings.lrn_batch, *shape)
        base = {"shape": list(full), "groups": groups, "device": str(device), "dtype": "fp32",
                "pass": "forward+backward", "repeats": settings.lrn_repeats}
        if reason:
            rows.extend({**base, "impl": impl, "status": "not run", "reason": reason} for impl in LRN_IMPLS)
            continue
        g = torch.Generator().manual_seed(settings.seed)
        # ReLU outputs on the scale conv1 and conv2 produce for 0-255 inputs.
        x = (torch.randn(full, generator=g) * 30).relu_().to(device)
        grad = torch.randn(full, generator=g).to(device)
        modules = {impl: LocalResponseNorm(shape[0], groups=groups, impl=impl) for impl in LRN_IMPLS}
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
            by_impl[impl]["ms"] = measure.median_spread(by_impl[impl]["ms"])
        speedup = by_impl["stock"]["ms"]["median"] / by_impl["fast"]["ms"]["median"]
        by_impl["fast"].update(speedup_vs_stock=speedup, **difference)
        rows.extend(by_impl[impl] for impl in LRN_IMPLS)
        del x, grad
    return rows
