"""Initialization presets (§5 of the paper, and Caffe's later variant).

An initialization produces the canonical state dict (the grouped net's names and shapes) on
the CPU from one seeded generator, and the model loads it. So a seed gives the same
weights whatever the layout or devices, towers on two GPUs included.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class InitPreset:
    """Weights ~ N(0, std²) per layer, biases constant per layer."""

    name: str
    description: str
    weight_std: float = 0.01
    weight_std_overrides: Dict[str, float] = field(default_factory=dict)
    bias: Dict[str, float] = field(default_factory=dict)  # layers not named get bias 0

    def std(self, layer: str) -> float:
        return self.weight_std_overrides.get(layer, self.weight_std)

    def bias_of(self, layer: str) -> float:
        return self.bias.get(layer, 0.0)


# §5: "We initialized the weights in each layer from a zero-mean Gaussian distribution with
# standard deviation 0.01. We initialized the neuron biases in the second, fourth, and fifth
# convolutional layers, as well as in the fully-connected hidden layers, with the constant 1.
# [...] We initialized the neuron biases in the remaining layers with the constant 0."
_PAPER_ONES = ("conv2", "conv4", "conv5", "fc6", "fc7")

INIT_PRESETS: Dict[str, InitPreset] = {
    "paper": InitPreset(
        name="paper",
        description="§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere",
        bias={name: 1.0 for name in _PAPER_ONES},
    ),
    # layers-145.cfg, the net behind the paper's 40.7% (FACTS §6b): initW 0.01 in conv1, conv2
    # and the FC layers but 0.03 in conv3, conv4 and conv5; initB as the paper says.
    "authors": InitPreset(
        name="authors",
        description="the authors' layers-145.cfg: as the paper but conv3, conv4, conv5 weights N(0, 0.03)",
        weight_std_overrides={"conv3": 0.03, "conv4": 0.03, "conv5": 0.03},
        bias={name: 1.0 for name in _PAPER_ONES},
    ),
    "caffe": InitPreset(
        name="caffe",
        description="Caffe bvlc_alexnet: as the paper but biases 0.1 and fc6/fc7 weights N(0, 0.005)",
        weight_std_overrides={"fc6": 0.005, "fc7": 0.005},
        bias={name: 0.1 for name in _PAPER_ONES},
    ),
    # A control, not a recipe: the trainability study (docs/trainability.md) separates the
    # paper's biases of 1 from its weights N(0, 0.01) with it.
    "paper-bias-0": InitPreset(
        name="paper-bias-0",
        description="the paper's weights N(0, 0.01) with every bias 0 (the trainability study's control)",
    ),
}


def get_init_preset(name: str) -> InitPreset:
    try:
        return INIT_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"init must be one of {', '.join(INIT_PRESETS)}; got {name!r}"
        ) from None


def canonical_init(spec, init: str = "paper", seed: Optional[int] = None):
    """The initial canonical state dict for ``spec`` (an ``alexnet.model.spec.NetSpec``; not
    imported here: the layer table's ModelConfig imports this module's preset names), on the
    CPU, in fp32.

    Layers are drawn in table order from one generator seeded with ``seed`` (a seed drawn
    from torch's global generator when None, so ``torch.manual_seed`` also fixes it).
    """
    preset = get_init_preset(init)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    state = OrderedDict()
    for layer in spec.layers:
        weight = torch.empty(layer.weight_shape)
        weight.normal_(0.0, preset.std(layer.name), generator=generator)
        state[f"{layer.name}.weight"] = weight
        state[f"{layer.name}.bias"] = torch.full((layer.out_channels,), preset.bias_of(layer.name))
    return state
