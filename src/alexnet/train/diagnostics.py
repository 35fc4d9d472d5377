"""Per-layer activation statistics: why a net trains or stalls at initialization.

For each conv and FC layer (before its ReLU) over one batch:

- ``mean`` and ``rms`` of the pre-activations;
- ``active``: the fraction of ReLUs that pass a signal (pre-activation > 0);
- ``signal``: how much of the pre-activation depends on the image. It is the std across the
  batch of each unit (averaged over units) divided by the rms. Near 0, every image gives the
  same output: the gradient then carries almost no information about the label, which is
  how a net sits at loss ln(classes).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import nn


@torch.no_grad()
def activation_stats(model: nn.Module, images: torch.Tensor) -> List[Dict]:
    """Statistics of every conv/fc layer's output for ``images`` (a preprocessed batch)."""
    names = [layer.name for layer in model.spec.layers]
    outputs: Dict[str, List[torch.Tensor]] = {name: [] for name in names}
    hooks = []
    for module_name, module in model.named_modules():
        short = module_name.split(".")[-1]
        if short in outputs and isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, short=short: outputs[short].append(o.detach().float().cpu())))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    rows = []
    for name in names:
        # Towers: each tower's half of the layer; join them along the channels.
        x = torch.cat(outputs[name], dim=1)
        rms = x.pow(2).mean().sqrt().item()
        per_unit_std = x.std(dim=0, unbiased=False).mean().item() if x.shape[0] > 1 else float("nan")
        rows.append({"layer": name, "mean": x.mean().item(), "rms": rms, "active": (x > 0).float().mean().item(),
                     "signal": per_unit_std / rms if rms > 0 else 0.0})
    return rows


def format_activation_stats(rows: List[Dict]) -> str:
    lines = [f"{'layer':<6} {'mean':>10} {'rms':>10} {'active':>8} {'signal':>8}"]
    for r in rows:
        lines.append(f"{r['layer']:<6} {r['mean']:>10.3g} {r['rms']:>10.3g} {100 * r['active']:>7.1f}% "
                     f"{r['signal']:>8.3f}")
    return "\n".join(lines)


def stall_warning(record: Dict, classes: int, init: str, lr: float) -> Optional[str]:
    """One line for an epoch record (``alexnet.train.loop.end_epoch``) of a run that has not
    left chance: training loss still at ln(classes) and validation top-1 error at chance.
    None when the run is learning. The paper's initialization at its learning rate stalls like
    this on small data sets (docs/trainability.md)."""
    chance_loss, chance_error = math.log(classes), 1 - 1 / classes
    at_chance = (record["train_loss"] >= 0.98 * chance_loss
                 and record["val_top1_error"] >= chance_error - 0.01)
    if not at_chance:
        return None
    advice = ("try the authors' initialization, --init authors (conv3-5 std 0.03), or a lower --lr such as "
              "0.001; see docs/trainability.md") if init == "paper" else f"try a lower --lr than {lr:g}"
    return (f"epoch {record['epoch']}: still at chance (training loss {record['train_loss']:.3f}, ln {classes} = "
            f"{chance_loss:.3f}; validation error {100 * record['val_top1_error']:.1f}%): the run is not learning; "
            + advice)
