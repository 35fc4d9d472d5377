"""How colourful the first layer's kernels are, per tower: the paper's §6.1 observation
(Figure 3) as a number.

The paper reports that the 48 conv1 kernels on one GPU come out largely colour-agnostic and
the 48 on the other largely colour-specific. To measure it, each kernel ``w`` (3, 11, 11) is
split into its grey part ``g`` (at every pixel, the mean of its three colour channels, copied
to all three) and its chromatic part ``c = w - g``. The two are orthogonal (``c`` sums to zero
over the channels at every pixel, ``g`` is the same in every channel), so
``|w|² = |g|² + |c|²`` and the kernel's

    colourfulness = |c| / |w|        (Frobenius norms)

lies in [0, 1]: 0 for a grey kernel (the same weights in R, G and B), sqrt(2/3) ≈ 0.82 for a
kernel with weights in one channel only, 1 for a kernel whose channels cancel at every pixel
(for example red minus green). It does not depend on the kernel's scale. A tower's score is
the mean over its kernels; an all-zero kernel counts as 0.
"""

from __future__ import annotations

from typing import List, Mapping, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..model.config import VARIANTS, ModelConfig
from ..model.spec import NetSpec, resolve
from ..model.state import split_towers, tower_key

CONV1 = "conv1.weight"


def colourfulness(kernels: torch.Tensor) -> torch.Tensor:
    """(N, 3, kh, kw) RGB kernels -> (N,) colourfulness in [0, 1] (see the module's docstring)."""
    if kernels.dim() != 4 or kernels.shape[1] != 3:
        raise ConfigError(f"colourfulness takes RGB kernels shaped (N, 3, kh, kw); got {tuple(kernels.shape)}")
    w = kernels.detach().double()
    chroma = w - w.mean(dim=1, keepdim=True)  # the grey part removed, pixel by pixel
    norm = w.flatten(1).norm(dim=1)
    score = chroma.flatten(1).norm(dim=1) / norm.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(norm > 0, score, torch.zeros_like(score)).float()


def conv1_weight(source: Union[nn.Module, Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """The canonical conv1 weights (96 or 48, 3, 11, 11), on the CPU, from a model of any
    layout, a canonical state dict, or a checkpoint as ``read_checkpoint`` returns it."""
    if isinstance(source, nn.Module):
        # Only conv1's pieces, joined the way the layout joins them: no copy of the whole net.
        pieces = {name: p for name, p in source.named_parameters() if name.split(".")[-2:] == ["conv1", "weight"]}
        weight = source.to_canonical(pieces)[CONV1]
    elif "model" in source and isinstance(source["model"], Mapping):
        weight = source["model"][CONV1]
    else:
        weight = source[CONV1]
    return weight.detach().float().cpu()


def _spec_for(source, weight: torch.Tensor) -> NetSpec:
    if isinstance(source, nn.Module):
        return source.spec
    if isinstance(source, Mapping) and isinstance(source.get("model_config"), Mapping):
        return resolve(ModelConfig.from_dict(source["model_config"], str(source.get("path", "checkpoint"))))
    # A bare state dict: the variant whose conv1 has these weights' shape.
    for variant in VARIANTS:
        spec = resolve(variant=variant)
        if tuple(spec["conv1"].weight_shape) == tuple(weight.shape):
            return spec
    raise ConfigError(f"conv1.weight has shape {tuple(weight.shape)}; no variant of the net has it")


def tower_kernels(source: Union[nn.Module, Mapping[str, torch.Tensor]]) -> List[torch.Tensor]:
    """conv1's kernels per tower: [tower 0's (48, 3, 11, 11), tower 1's], or one entry (the
    one-GPU net's 48) when the net has a single tower."""
    weight = conv1_weight(source)
    spec = _spec_for(source, weight)
    pieces = split_towers({CONV1: weight}, spec)
    return [pieces[tower_key(k, "conv1", "weight")] for k in range(spec.towers)]


def tower_colourfulness(source: Union[nn.Module, Mapping[str, torch.Tensor]]) -> List[float]:
    """The mean colourfulness of each tower's conv1 kernels: [tower 0, tower 1] (one value for
    the one-GPU net). ``source``: a model of any layout, a canonical state dict or a checkpoint."""
    return [float(colourfulness(kernels).mean()) for kernels in tower_kernels(source)]
