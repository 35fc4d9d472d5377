"""A hidden layer's activations, from a net of either layout: what the paper's Figure 4 compares
(fc7's 4096 values after the ReLU), and the per-layer statistics that show why a net trains or
stalls at initialization (docs/trainability.md).

Forward hooks on the layer's module(s) read them as the net runs: one module in the grouped
net, one per tower in the two-tower net (their halves joined in tower order, tower 0's units
first, which is the canonical order of the layer's rows). The hooks keep the layer's own
output (before its ReLU) on a new tensor, because the net's ReLU runs in place right after
the layer; dropout (at test, the paper's form scales by 1-p) is not part of an activation.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def layer_modules(model: nn.Module, layer: str) -> List[nn.Module]:
    """The module(s) computing ``layer`` (e.g. "fc7", or "pool5"), in tower order: the conv,
    linear or max-pooling modules of that name (the towers' exchange points carry the layer's
    name too). pool1 and pool2 run inside the fused ReLU-LRN-pool on the CPU, where their
    modules are not called (a net built with ``fuse_relu_lrn_pool=False`` calls them)."""
    modules = [m for name, m in model.named_modules()
               if (name == layer or name.endswith("." + layer))
               and isinstance(m, (nn.Linear, nn.Conv2d, nn.MaxPool2d))]
    if not modules:
        raise KeyError(f"the model has no layer named {layer!r}")
    return modules


def layer_outputs(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and return each of ``layers``' outputs before its ReLU, both towers'
    halves joined along the channels, float32, on the model's first device."""
    captured: Dict[str, List[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []
    for layer in layers:
        for module in layer_modules(model, layer):
            handles.append(module.register_forward_hook(
                lambda m, inputs, output, layer=layer: captured[layer].append(output.detach().float().clone())))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    home = model.devices[0]
    return {layer: torch.cat([half.to(home) for half in halves], dim=1) for layer, halves in captured.items()}


def relu_activations(model: nn.Module, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
    """``layer``'s output after its ReLU for crops ``x`` (N, 3, 224|227, same): (N, 4096) for
    fc7, float32, on the model's first device."""
    return F.relu(layer_outputs(model, x, [layer])[layer]).flatten(1)


@torch.no_grad()
def activation_stats(model: nn.Module, images: torch.Tensor) -> List[Dict]:
    """For each conv and FC layer (before its ReLU), over one preprocessed batch in eval mode:
    ``mean`` and ``rms`` of the pre-activations; ``active``, the fraction of ReLUs that pass a
    signal; ``signal``, how much of the pre-activation depends on the image (the std across the
    batch of each unit, averaged over units, over the rms). Near 0, every image gives the same
    output: the gradient then carries almost no information about the label, which is how a
    net sits at loss ln(classes)."""
    names = [layer.name for layer in model.spec.layers]
    was_training = model.training
    model.eval()
    try:
        outputs = layer_outputs(model, images, names)
    finally:
        model.train(was_training)
    rows = []
    for name in names:
        x = outputs[name].cpu()
        rms = x.pow(2).mean().sqrt().item()
        per_unit_std = x.std(dim=0, unbiased=False).mean().item() if x.shape[0] > 1 else math.nan
        rows.append({"layer": name, "mean": x.mean().item(), "rms": rms, "active": (x > 0).float().mean().item(),
                     "signal": per_unit_std / rms if rms > 0 else 0.0})
    return rows


def format_activation_stats(rows: List[Dict]) -> str:
    lines = [f"{'layer':<6} {'mean':>10} {'rms':>10} {'active':>8} {'signal':>8}"]
    for r in rows:
        lines.append(f"{r['layer']:<6} {r['mean']:>10.3g} {r['rms']:>10.3g} {100 * r['active']:>7.1f}% "
                     f"{r['signal']:>8.3f}")
    return "\n".join(lines)
