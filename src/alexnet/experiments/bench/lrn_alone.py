"""The LRN on its own: the fast implementation against the stock one at AlexNet's LRN inputs
(from the layer table), forward + backward in fp32."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ...devices import unavailable
from ...model.lrn import LRN_IMPLS, LocalResponseNorm
from ...model.spec import resolve
from . import measure
from .cases import Bench


def lrn_inputs() -> Tuple[Tuple[Tuple[int, int, int], ...], int]:
    """The paper's LRN inputs per image, from the layer table (each layer with LRN: its output
    maps and size, over both towers), and the towers they are split between."""
    spec = resolve()
    return tuple((row.out_channels, row.out_size, row.out_size) for row in spec.layers if row.layer.lrn), spec.towers


def run_lrn_alone(bench: Bench, device: torch.device, log) -> List[Dict[str, object]]:
    """At each LRN input, per implementation: time (interleaved repeats), peak memory, bytes
    kept for backward; on the fast one's row, its speed-up and the largest differences
    between the two in value and gradient."""
    reason = unavailable([device])
    shapes, groups = lrn_inputs()
    rows = []
    for shape in shapes:
        full = (bench.lrn_batch, *shape)
        base = {"shape": list(full), "groups": groups, "device": str(device), "dtype": "fp32",
                "pass": "forward+backward", "repeats": bench.lrn_repeats}
        if reason:
            rows += [{**base, "impl": impl, "status": "not run", "reason": reason} for impl in LRN_IMPLS]
            continue
        g = torch.Generator().manual_seed(bench.seed)
        # ReLU outputs on the scale conv1 and conv2 produce for 0-255 inputs.
        x = (torch.randn(full, generator=g) * 30).relu_().to(device)
        grad = torch.randn(full, generator=g).to(device)
        modules = {impl: LocalResponseNorm(shape[0], groups=groups, impl=impl) for impl in LRN_IMPLS}
        by_impl, outputs = {}, {}

        def step(impl):
            modules[impl](x.detach().requires_grad_(True)).backward(grad)

        for impl in LRN_IMPLS:
            log(f"LRN {impl} {full}: warm-up and memory")
            with measure.peak_memory([device]) as memory:
                with measure.saved_for_backward() as saved:
                    leaf = x.detach().requires_grad_(True)
                    y = modules[impl](leaf)
                y.backward(grad)
            outputs[impl] = (y.detach(), leaf.grad)
            by_impl[impl] = {**base, "impl": impl, "status": "ok", "peak_memory": memory[str(device)],
                             "saved_for_backward_bytes": saved["bytes"], "ms": []}
            del y, leaf
        (yf, gf), (ys, gs) = outputs.pop("fast"), outputs.pop("stock")
        by_impl["fast"].update(
            max_rel_diff_value=float(((yf - ys).abs() / ys.abs().clamp_min(1e-30)).max()),
            max_diff_grad_over_max_grad=float((gf - gs).abs().max() / gs.abs().max().clamp_min(1e-30)))
        del yf, gf, ys, gs
        for r in range(bench.lrn_repeats):
            log(f"LRN {full}: round {r + 1}/{bench.lrn_repeats}")
            for impl in LRN_IMPLS:
                by_impl[impl]["ms"].append(measure.time_blocks(lambda: step(impl), [device], 1) * 1e3)
        for impl in LRN_IMPLS:
            by_impl[impl]["ms"] = measure.median_spread(by_impl[impl]["ms"])
        by_impl["fast"]["speedup_vs_stock"] = by_impl["stock"]["ms"]["median"] / by_impl["fast"]["ms"]["median"]
        rows += [by_impl[impl] for impl in LRN_IMPLS]
        del x, grad
    return rows
