"""Tables as text: plain columns for the terminal, and Markdown for reports (an ablation's
report.md, the GPU check's summary.md)."""

from __future__ import annotations

from typing import List, Sequence


def plain_table(header: Sequence[str], rows: Sequence[Sequence], right: Sequence[bool]) -> List[str]:
    """Columns padded to their widest cell, two spaces apart; ``right[i]``: column i right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]

    def line(cells):
        return "  ".join((str(c).rjust(w) if r else str(c).ljust(w)) for c, w, r in zip(cells, widths, right)).rstrip()
    return [line(header)] + [line(r) for r in rows]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    """A Markdown table; a cell's ``|`` is escaped and its line breaks become spaces."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
    return [line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(row) for row in rows]
