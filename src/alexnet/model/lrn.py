"""Local response normalization (§3.3), kept inside each tower.

    b_c = a_c / (k + (α/n) · Σ_{j = c-n/2}^{c+n/2} a_j²)^β,   k=2, n=5, α=1e-4, β=0.75

with zero padding past the first and last map of a tower. α is divided by n as in the
authors' code and in ``torch.nn.LocalResponseNorm`` (FACTS §2). With ``groups=2`` the
window runs over each tower's maps separately and never crosses the boundary between them;
Caffe's port normalises across all 96/256 maps, which is not the paper's net.

Two implementations compute the same values, chosen by ``impl`` (``lrn_impl`` everywhere):

- ``"stock"``: ``torch.nn.functional.local_response_norm`` on each tower's half. It is built
  from generic operations (square, pad, a 3-d average pool, pow, divide) and keeps several
  activation-sized intermediates for the backward pass.
- ``"fast"``: ``alexnet.ops.fast_lrn.fast_lrn``, the same values with less time and memory (a
  window sum without bounds checks, cache-sized chunks on the CPU, a backward that recomputes
  instead of storing). On the CPU the net also fuses ReLU, this LRN and the max-pooling after
  it into one pass (``alexnet.ops.fast_lrn.relu_lrn_maxpool``; see ``Column``).

Both run in fp32 under autocast and return the input's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..ops.fast_lrn import exported_lrn, fast_lrn, no_autocast
from .spec import (LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, SPATIAL_NORM_K, SPATIAL_NORM_POW, SPATIAL_NORM_SCALE,
                   SPATIAL_NORM_SIZE)

LRN_IMPLS = ("fast", "stock")


class LocalResponseNorm(nn.Module):
    """LRN over ``channels`` maps split into ``groups`` towers; the window stays in a tower."""

    def __init__(self, channels: int, groups: int = 1, size: int = LRN_SIZE,
                 alpha: float = LRN_ALPHA, beta: float = LRN_BETA, k: float = LRN_K,
                 impl: str = "fast"):
        super().__init__()
        if impl not in LRN_IMPLS:
            raise ConfigError(f"lrn_impl must be one of {', '.join(LRN_IMPLS)}; got {impl!r}")
        self.channels, self.groups = channels, groups
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        # fp32 even under bf16/fp16 autocast: the window sum of squares of 0-255-scale
        # activations overflows fp16 and loses most of its digits in bf16.
        with no_autocast(x.device.type):
            x = x.to(torch.promote_types(dtype, torch.float32))  # fp16/bf16 -> fp32; fp64 stays
            if torch.compiler.is_exporting():  # torch.onnx: one LRN operator per tower (alexnet.export)
                y = exported_lrn(x, self.groups, self.size, self.alpha, self.beta, self.k)
            elif self.impl == "fast":
                y = fast_lrn(x, self.groups, self.size, self.alpha, self.beta, self.k)
            else:
                y = stock_lrn(x, self.groups, self.size, self.alpha, self.beta, self.k)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (f"{self.channels}, groups={self.groups}, size={self.size}, alpha={self.alpha}, "
                f"beta={self.beta}, k={self.k}, impl={self.impl!r}")


def stock_lrn(x, groups=1, size=LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K):
    """torch.nn.functional.local_response_norm applied to each group's maps separately."""
    if groups == 1:
        return F.local_response_norm(x, size, alpha, beta, k)
    n, c, h, w = x.shape
    # (N, C, H, W) -> (N·G, C/G, H, W): each sample's groups become separate samples.
    y = F.local_response_norm(x.reshape(n * groups, c // groups, h, w), size, alpha, beta, k)
    return y.reshape(n, c, h, w)


class SpatialResponseNorm(nn.Module):
    """The authors' ``cnorm2`` (layers-145.cfg, ``type=rnorm``; not in the paper): within each
    map, b = a / (k + (scale/size²) · Σ a²)^pow over the size x size window centred on the
    position, with zeros past the map's edges (cuda-convnet's response norm, FACTS §6b).

    It never mixes maps, so it is the same per tower and in the grouped net. Like the LRN it
    runs in fp32 under autocast and returns the input's dtype.
    """

    def __init__(self, size: int = SPATIAL_NORM_SIZE, scale: float = SPATIAL_NORM_SCALE,
                 power: float = SPATIAL_NORM_POW, k: float = SPATIAL_NORM_K):
        super().__init__()
        self.size, self.scale, self.power, self.k = size, scale, power, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        with no_autocast(x.device.type):
            x = x.to(torch.promote_types(dtype, torch.float32))
            # The window's mean of squares, zeros included, is its sum over size².
            mean_square = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
            y = x * (self.k + self.scale * mean_square).pow(-self.power)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, pow={self.power}, k={self.k}"
