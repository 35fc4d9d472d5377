"""Whether torch.compile is tracing the code right now."""

import torch


def compiling() -> bool:
    """True while torch.compile traces: the CPU-only paths (chunked LRN, transfer counters)
    step aside then, because they read shapes or branch in ways a graph should not capture."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())
