"""Local response normalization (§3.3), kept inside each tower.

    b_c = a_c / (k + (α/n) · Σ_{j = c-n/2}^{c+n/2} a_j²)^β,   k=2, n=5, α=1e-4, β=0.75

with zero padding past the first and last map of a tower. α is divided by n as in the
authors' code and in ``torch.nn.LocalResponseNorm`` (FACTS §2). With ``groups=2`` the
window runs over each tower's maps separately and never crosses the boundary between them;
Caffe's port normalises across all 96/256 maps, which is not the paper's net.

Two implementations compute the same values:

- ``"stock"``: ``torch.nn.functional.local_response_norm`` on each tower's half. It is built
  from generic operations (square, pad, a 3-d average pool, pow, divide) and keeps several
  activation-sized intermediates for the backward pass.
- ``"fast"``: the window sum as n shifted in-place adds inside each tower, d^(-3/4) as
  rsqrt·sqrt instead of pow, a pass over the batch in cache-sized chunks on the CPU, and a
  custom backward that recomputes from the input instead of storing intermediates: the only
  tensor kept for backward is the input, which the ReLU before it keeps anyway.

Both run in fp32 under autocast and return the input's dtype.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .spec import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

LRN_IMPLS = ("fast", "stock")


#: On the CPU the fast LRN works through the batch a few samples at a time, so that its
#: six elementwise passes reuse data in the cache instead of streaming the whole
#: activation from memory for each one (2-3x faster at AlexNet's shapes on 2 cores).
CPU_CHUNK_BYTES = 4 << 20


def window_sum(t: torch.Tensor, groups: int, size: int = LRN_SIZE) -> torch.Tensor:
    """Σ over each channel's LRN window of ``t`` (N, C, H, W), within each of ``groups``.

    Zero padding past a group's first and last map, as in PyTorch's LocalResponseNorm:
    size//2 maps before and (size-1)//2 after. Works in either memory format.
    """
    n, c, h, w = t.shape
    if c % groups:
        raise ConfigError(f"LRN: {c} channels cannot be split into {groups} groups")
    t5 = t.view(n, groups, c // groups, h, w)  # (N, G, C/G, H, W): a group never sees another
    out = t5.clone()
    for offset in range(1, size // 2 + 1):  # maps before
        out[:, :, offset:] += t5[:, :, :-offset]
    for offset in range(1, (size - 1) // 2 + 1):  # maps after
        out[:, :, :-offset] += t5[:, :, offset:]
    return out.view(n, c, h, w)


def _neg_pow(d: torch.Tensor, beta: float) -> torch.Tensor:
    """d^(-β) in place; for the paper's β = 3/4 as d^(-1/2)·d^(-1/4), cheaper than pow."""
    if beta == 0.75:
        d.rsqrt_()
        return d.mul_(torch.sqrt(d))
    return d.pow_(-beta)


def _chunks(n_samples: int, x: torch.Tensor):
    if x.device.type != "cpu" or n_samples == 0:
        return [slice(0, n_samples)]
    per_sample = max(1, x[0].numel() * x.element_size())
    step = max(1, CPU_CHUNK_BYTES // per_sample)
    return [slice(i, i + step) for i in range(0, n_samples, step)]


class _FastLRN(torch.autograd.Function):
    """y = x · d^(-β) with d = k + (α/n)·W(x²), W the window sum. The backward recomputes d
    from x instead of storing it:

        ∂L/∂x = g · d^(-β) − 2β(α/n) · x · W(g · x · d^(-β-1))

    (W is symmetric: a map is in c's window exactly when c is in the map's window).
    """

    @staticmethod
    def forward(ctx, x, groups, size, alpha, beta, k):
        y = torch.empty_like(x)
        for part in _chunks(x.shape[0], x):
            xc = x[part]
            d = window_sum(xc * xc, groups, size).mul_(alpha / size).add_(k)
            torch.mul(xc, _neg_pow(d, beta), out=y[part])
        ctx.save_for_backward(x)
        ctx.params = (groups, size, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        groups, size, alpha, beta, k = ctx.params
        g = g.contiguous(memory_format=_format_of(x))
        grad = torch.empty_like(x)
        for part in _chunks(x.shape[0], x):
            xc, gc, out = x[part], g[part], grad[part]
            d = window_sum(xc * xc, groups, size).mul_(alpha / size).add_(k)
            p = _neg_pow(d.clone(), beta)  # d^(-β)
            t = xc * p
            t.mul_(gc).div_(d)  # g · x · d^(-β-1)
            torch.mul(gc, p, out=out)
            out.addcmul_(xc, window_sum(t, groups, size), value=-2.0 * beta * alpha / size)
        return grad, None, None, None, None, None


def _format_of(x: torch.Tensor):
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.preserve_format


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
        with _no_autocast(x.device.type):
            x = x.to(torch.promote_types(dtype, torch.float32))  # fp16/bf16 -> fp32; fp64 stays
            if self.impl == "fast":
                y = _FastLRN.apply(x, self.groups, self.size, self.alpha, self.beta, self.k)
            else:
                y = stock_lrn(x, self.groups, self.size, self.alpha, self.beta, self.k)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return (f"{self.channels}, groups={self.groups}, size={self.size}, alpha={self.alpha}, "
                f"beta={self.beta}, k={self.k}, impl={self.impl!r}")


def _no_autocast(device_type: str):
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()  # meta and fake devices have no autocast


def stock_lrn(x, groups=1, size=LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K):
    """torch.nn.functional.local_response_norm applied to each group's maps separately."""
    if groups == 1:
        return F.local_response_norm(x, size, alpha, beta, k)
    n, c, h, w = x.shape
    # (N, C, H, W) -> (N·G, C/G, H, W): each sample's groups become separate samples.
    y = F.local_response_norm(x.reshape(n * groups, c // groups, h, w), size, alpha, beta, k)
    return y.reshape(n, c, h, w)
