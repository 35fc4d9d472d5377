"""The one place library code reports progress: the CLI hands in an enabled Reporter,
a Python user gets a silent one by default."""

from __future__ import annotations

import sys
from typing import Optional

from tqdm import tqdm


class _NullBar:
    """A progress bar that shows nothing but keeps its count (callers read ``n``)."""

    def __init__(self, initial: int = 0):
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Reporter:
    """Progress bars (tqdm) and one-line messages, or nothing when disabled. Warnings are shown
    whenever ``warnings`` is set, which it is unless given: quiet (``enabled=False``) hides
    progress, not warnings. ``SILENT`` shows neither."""

    def __init__(self, enabled: bool = True, stream=None, warnings: bool = True):
        self.enabled = enabled
        self.warnings = warnings
        self.stream = stream or sys.stderr

    def line(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=self.stream)

    def warn(self, message: str) -> None:
        """A line the user must see (a run that is not learning): shown under --quiet too."""
        if self.warnings:
            tqdm.write(f"warning: {message}", file=self.stream)

    def bar(self, total: Optional[int], desc: str, initial: int = 0, unit: str = "batch"):
        if not self.enabled:
            return _NullBar(initial)

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                    dynamic_ncols=True, leave=False, mininterval=0.5)


SILENT = Reporter(enabled=False, warnings=False)
