"""The fast local response normalization, and ReLU -> LRN -> max-pool in one pass: CPU speed-ups
that compute exactly what ``alexnet.model.lrn`` defines, chosen with ``lrn_impl="fast"``.

- ``fast_lrn``: the scaled squares (α/n)·a² go into a buffer with n-1 padding maps around
  each tower's maps; the padding and every map also hold k/n, so the sum over a window
  (neighbouring pairs first, then two adds for n=5) is the denominator itself, with no
  bounds to check. d^(-3/4) as rsqrt·sqrt instead of pow; a pass over the batch in
  cache-sized chunks on the CPU, reusing one set of chunk-sized work tensors; and a custom
  backward that recomputes from the input instead of storing intermediates: the only tensor
  kept for backward is the input, which the ReLU before it keeps anyway.
- ``relu_lrn_maxpool``: on the CPU the network goes one step further for its two LRN blocks:
  ReLU, LRN and max-pooling run chunk by chunk in one function that keeps only the conv
  output for backward and recomputes the rest, so none of the three activation-sized
  tensors in between (ReLU output, LRN output, their gradients) is ever allocated. The net
  takes this path when it is built with ``fuse_relu_lrn_pool=True`` (the default); the LRN
  and pooling modules' own ``forward`` (and any hooks on them) are then not called.

Both compute in fp32 under autocast and return the input's dtype.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import ConfigError
from .tracing import compiling


#: On the CPU the fast LRN works through the batch a few samples at a time, so that its
#: elementwise passes reuse data in the cache instead of streaming the whole activation
#: from memory for each one (1-2 MiB measured best at AlexNet's shapes on 2 cores).
CPU_CHUNK_BYTES = 2 << 20


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _empty5(n: int, groups: int, maps: int, h: int, w: int, channels_last: bool, like: torch.Tensor):
    """An empty (n, G, maps, H, W) tensor, maps innermost when ``channels_last``: laid out like
    the (n, G, C/G, H, W) view of a chunk, so no pass mixes memory orders."""
    if channels_last:
        return torch.empty((n, h, w, groups, maps), dtype=like.dtype, device=like.device).permute(0, 3, 4, 1, 2)
    return torch.empty((n, groups, maps, h, w), dtype=like.dtype, device=like.device)


class _Scratch:
    """Chunk-sized work tensors for one call, allocated once and reused by every chunk.

    ``padded(name, n, fill)`` is an (n, G, C/G + size-1, H, W) buffer whose size//2 maps
    before and (size-1)//2 maps after each group's maps hold ``fill`` (written once): the
    window sum of its maps then needs no bounds. ``plain(name, n)`` is (n, G, C/G, H, W).
    """

    def __init__(self, chunk: torch.Tensor, groups: int, size: int):
        self.n, c, self.h, self.w = chunk.shape
        self.groups, self.size, self.per_group = groups, size, c // groups
        self.channels_last = _channels_last(chunk)
        self.like = chunk
        self.tensors = {}

    def _get(self, name, maps, fill=None):
        if name not in self.tensors:
            t = _empty5(self.n, self.groups, maps, self.h, self.w, self.channels_last, self.like)
            if fill is not None:
                before, after = self.size // 2, (self.size - 1) // 2
                if before:
                    t[:, :, :before].fill_(fill)
                if after:
                    t[:, :, maps - after:].fill_(fill)
            self.tensors[name] = t
        return self.tensors[name]

    def padded(self, name: str, n: int, fill: float):
        buf = self._get(name, self.per_group + self.size - 1, fill)[:n]
        before = self.size // 2
        return buf, buf[:, :, before:before + self.per_group]

    def plain(self, name: str, n: int, maps: int = 0):
        return self._get(name, maps or self.per_group)[:n]


def _window_of_padded(buf: torch.Tensor, size: int, out: torch.Tensor, pairs=None) -> torch.Tensor:
    """out[:, :, c] = Σ_{j<size} buf[:, :, c+j]: the window sum of a padded buffer.

    Sums of neighbouring pairs first (into ``pairs`` when given), so n=5 takes three passes
    (pairs, then two adds) instead of n-1 shifted adds. Every map is summed in the same order
    whatever its position, so maps at a group's edge get exactly what the padding implies.
    """
    m = out.shape[2]
    terms = []
    if size >= 2:
        pairs = torch.add(buf[:, :, :-1], buf[:, :, 1:], out=pairs)  # pairs[i] = buf[i] + buf[i+1]
        terms += [pairs[:, :, 2 * i:2 * i + m] for i in range(size // 2)]
    if size % 2:
        terms.append(buf[:, :, size - 1:size - 1 + m])
    if len(terms) == 1:
        return out.copy_(terms[0])
    torch.add(terms[0], terms[1], out=out)
    for term in terms[2:]:
        out.add_(term)
    return out


def _denominator(a5: torch.Tensor, scratch: _Scratch, alpha: float, k: float) -> torch.Tensor:
    """d = k + (α/n)·W(a²) for a chunk's (n, G, C/G, H, W) view, into scratch.

    k is folded into the window: every window covers exactly n maps of the padded buffer, so
    padding maps that hold k/n and interior maps that hold (α/n)·a² + k/n sum to d directly.
    """
    n, size = a5.shape[0], scratch.size
    buf, inner = scratch.padded("squares", n, fill=k / size)
    torch.addcmul(_scalar(k / size, a5), a5, a5, value=alpha / size, out=inner)
    return _window_of_padded(buf, size, scratch.plain("d", n), pairs=scratch.plain("pairs", n, buf.shape[2] - 1))


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _neg_pow(d: torch.Tensor, beta: float, out: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """d^(-β) into ``out``; for the paper's β = 3/4 as d^(-1/2)·d^(-1/4), cheaper than pow."""
    if beta == 0.75:
        torch.rsqrt(d, out=out)
        return out.mul_(torch.sqrt(out, out=scratch.plain("root", out.shape[0])))
    return torch.pow(d, -beta, out=out)


def _chunks(n_samples: int, x: torch.Tensor):
    if x.device.type != "cpu" or n_samples == 0 or compiling():
        return [slice(0, n_samples)]
    per_sample = max(1, x[0].numel() * 4)  # the work is in fp32 whatever the input's dtype
    step = max(1, CPU_CHUNK_BYTES // per_sample)
    return [slice(i, min(i + step, n_samples)) for i in range(0, n_samples, step)]


def _grad_lrn(g5, a5, p, d, scratch: _Scratch, alpha: float, beta: float, out5, y5=None):
    """out5 = ∂L/∂a of the LRN, from g5 = ∂L/∂y, the input a5, p = d^(-β) and d:

        ∂L/∂a = g · d^(-β) − 2β(α/n) · a · W(g · a · d^(-β-1))

    (W is symmetric: a map is in c's window exactly when c is in the map's window).
    ``y5`` = a·d^(-β) when the caller has it. d is overwritten.
    """
    n, size = a5.shape[0], scratch.size
    buf, inner = scratch.padded("g_a_d", n, fill=0.0)
    if y5 is None:
        torch.mul(a5, p, out=inner).mul_(g5)
    else:
        torch.mul(y5, g5, out=inner)
    inner.div_(d)  # g · a · d^(-β-1)
    window = _window_of_padded(buf, size, d, pairs=scratch.plain("pairs", n, buf.shape[2] - 1))
    torch.mul(g5, p, out=out5)
    return out5.addcmul_(a5, window, value=-2.0 * beta * alpha / size)


class _FastLRN(torch.autograd.Function):
    """y = x · d^(-β) with d = k + (α/n)·W(x²), W the window sum. The backward recomputes d
    from x instead of storing it."""

    @staticmethod
    def forward(ctx, x, groups, size, alpha, beta, k):
        x = _dense(x)
        _check_groups(x.shape[1], groups)
        y = torch.empty_like(x)
        parts = _chunks(x.shape[0], x)
        scratch = _Scratch(x[parts[0]], groups, size)
        for part in parts:
            x5 = _split(x[part], groups)
            d = _denominator(x5, scratch, alpha, k)
            torch.mul(x5, _neg_pow(d, beta, d, scratch), out=_split(y[part], groups))
        ctx.save_for_backward(x)
        ctx.params = (groups, size, alpha, beta, k)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        groups, size, alpha, beta, k = ctx.params
        g = g.contiguous(memory_format=_format_of(x))
        grad = torch.empty_like(x)
        parts = _chunks(x.shape[0], x)
        scratch = _Scratch(x[parts[0]], groups, size)
        for part in parts:
            x5 = _split(x[part], groups)
            d = _denominator(x5, scratch, alpha, k)
            p = _neg_pow(d, beta, scratch.plain("p", x5.shape[0]), scratch)
            _grad_lrn(_split(g[part], groups), x5, p, d, scratch, alpha, beta, _split(grad[part], groups))
        return grad, None, None, None, None, None


def _split(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(n, C, H, W) -> (n, G, C/G, H, W), a view in either memory format."""
    n, c, h, w = t.shape
    return t.view(n, groups, c // groups, h, w)


def _check_groups(channels: int, groups: int) -> None:
    if channels % groups:
        raise ConfigError(f"LRN: {channels} channels cannot be split into {groups} groups")


def _format_of(x: torch.Tensor):
    return torch.channels_last if _channels_last(x) else torch.contiguous_format


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when it is contiguous in either memory format, else a contiguous copy."""
    return x if x.is_contiguous() or _channels_last(x) else x.contiguous()




def fast_lrn(x: torch.Tensor, groups: int, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The LRN of ``x`` (N, C, H, W) within each of ``groups`` groups of maps (fp32 or fp64 in)."""
    return _FastLRN.apply(x, groups, size, alpha, beta, k)


def no_autocast(device_type: str):
    """Autocast off on this device type (meta and fake devices have none)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


# -- ReLU -> LRN -> max-pool in one pass (the CPU path of blocks 1 and 2) -------------------

def fusable(x: torch.Tensor, lrn: nn.Module, pool: nn.Module) -> bool:
    """Whether ``relu_lrn_maxpool`` computes ReLU, ``lrn`` (a LocalResponseNorm) and ``pool``
    (a max-pool) here: the fast LRN on the CPU, outside torch.compile (which fuses the plain ops
    itself), and a plain max-pool. Whether the net takes this path at all is its own switch
    (``fuse_relu_lrn_pool``), never what is hooked onto its modules."""
    return (lrn.impl == "fast" and x.device.type == "cpu" and x.dim() == 4 and not compiling()
            and _pool_args(pool) is not None)


def _pool_args(pool: nn.Module) -> Optional[Tuple[Tuple[int, int], Tuple[int, int]]]:
    """(kernel, stride) of a plain max-pool (no padding, dilation or ceil mode), else None."""
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if not isinstance(pool, nn.MaxPool2d):
        return None
    if pool.return_indices or pool.ceil_mode or pair(pool.padding) != (0, 0) or pair(pool.dilation) != (1, 1):
        return None
    return pair(pool.kernel_size), pair(pool.stride if pool.stride is not None else pool.kernel_size)


def relu_lrn_maxpool(x: torch.Tensor, lrn: nn.Module, pool: nn.Module) -> torch.Tensor:
    """``pool(lrn(relu(x)))``, the same values, in one pass over the batch (see ``fusable``).

    x is the conv output (N, C, H, W). Only x is kept for backward; the backward recomputes
    the ReLU, the LRN and the pooling's argmax chunk by chunk, in the cache.
    """
    kernel, stride = _pool_args(pool)
    dtype = x.dtype
    with no_autocast(x.device.type):
        return _ReluLRNMaxPool.apply(x, lrn.groups, lrn.size, lrn.alpha, lrn.beta, lrn.k, kernel, stride,
                                     torch.promote_types(dtype, torch.float32))


def _relu_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The ReLU of x, written into the work tensor ``out`` (fp32 when x is bf16/fp16)."""
    if x.dtype == out.dtype:
        return torch.clamp_min(x, 0, out=out)
    return out.copy_(x).clamp_min_(0)


class _ReluLRNMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, groups, size, alpha, beta, k, kernel, stride, work_dtype):
        x = _dense(x)
        n, c, h, w = x.shape
        _check_groups(c, groups)
        out_h = (h - kernel[0]) // stride[0] + 1
        out_w = (w - kernel[1]) // stride[1] + 1
        out = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device,
                          memory_format=_format_of(x))
        parts = _chunks(n, x)
        a = torch.empty_like(x[parts[0]], dtype=work_dtype)  # one chunk: the ReLU, then the LRN output
        scratch = _Scratch(a, groups, size)
        for part in parts:
            ac = _relu_into(x[part], a[:part.stop - part.start])
            a5 = _split(ac, groups)
            d = _denominator(a5, scratch, alpha, k)
            a5.mul_(_neg_pow(d, beta, d, scratch))  # the LRN output, in place of its input
            out[part] = F.max_pool2d(ac.to(x.dtype), kernel, stride)
        ctx.save_for_backward(x)
        ctx.params = (groups, size, alpha, beta, k, kernel, stride, work_dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        groups, size, alpha, beta, k, kernel, stride, work_dtype = ctx.params
        g = g.contiguous(memory_format=_format_of(x))
        grad = torch.empty_like(x)
        parts = _chunks(x.shape[0], x)
        a = torch.empty_like(x[parts[0]], dtype=work_dtype)
        y = torch.empty_like(a)
        scratch = _Scratch(a, groups, size)
        exact = grad.dtype == work_dtype
        for part in parts:
            n = part.stop - part.start
            ac, yc = _relu_into(x[part], a[:n]), y[:n]
            a5, y5 = _split(ac, groups), _split(yc, groups)
            d = _denominator(a5, scratch, alpha, k)
            p = _neg_pow(d, beta, scratch.plain("p", n), scratch)
            torch.mul(a5, p, out=y5)
            # The same argmax as the forward pass: the same values through the same kernel. Under
            # autocast the pooling sees the LRN output in the input's dtype, as the modules do,
            # so values that round to a tie pass the gradient to the same one.
            pooled_input = yc.to(x.dtype)
            _, indices = torch.ops.aten.max_pool2d_with_indices(pooled_input, list(kernel), list(stride))
            gy = torch.ops.aten.max_pool2d_with_indices_backward(
                g[part], pooled_input, list(kernel), list(stride), [0, 0], [1, 1], False, indices)
            gy5 = _split(gy.to(work_dtype).contiguous(memory_format=_format_of(ac)), groups)
            # The ReLU's gradient: nothing flows where its output was 0 (the LRN's second
            # term is already 0 there, its factor a being 0).
            torch.ops.aten.threshold_backward.grad_input(p, a5, 0.0, grad_input=p)
            target = grad[part] if exact else torch.empty_like(ac)
            _grad_lrn(gy5, a5, p, d, scratch, alpha, beta, _split(target, groups), y5=y5)
            if not exact:
                grad[part] = target
        return grad, None, None, None, None, None, None, None, None



# The schema is written out: torch 2.4 cannot read it from this module's string annotations.
@torch.library.custom_op("alexnet::lrn", mutates_args=(),
                         schema="(Tensor x, int size, float alpha, float beta, float k) -> Tensor")
def lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The LRN of one group of maps as one operator, for exporting the net: ONNX translates it
    to its own LRN node (the same size/alpha/beta/bias convention: alpha divided by size)."""
    return F.local_response_norm(x, size, alpha, beta, k)


@lrn_op.register_fake
def _lrn_shape(x, size, alpha, beta, k):
    return torch.empty_like(x)


def exported_lrn(x: torch.Tensor, groups: int, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The LRN as an exported graph shows it: one ``alexnet::lrn`` per group (tower), joined."""
    if groups == 1:
        return lrn_op(x, size, alpha, beta, k)
    return torch.cat([lrn_op(part, size, alpha, beta, k) for part in x.chunk(groups, dim=1)], dim=1)
