"""Whether torch is tracing the code right now: torch.compile, or torch.export (``alexnet export``)."""

import torch


def compiling() -> bool:
    """True while torch.compile traces: the CPU-only paths (chunked LRN, transfer counters)
    step aside then, because they read shapes or branch in ways a graph should not capture."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def exporting() -> bool:
    """True while torch.export traces the net for a graph file (``alexnet.export``): the paths
    written for one runtime's speed (the CPU's channels-last padding buffer) give way to the one
    operator a reader of the graph expects (a ``Pad``)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_exporting())
