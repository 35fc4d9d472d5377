"""conv1's 96 kernels as one picture in the paper's arrangement (Figure 3): tower 0's 48 above
tower 1's 48, each tower's colourfulness beside it (``alexnet.analysis.colourfulness``).

The layout: ``columns`` kernels per row (16), so each tower fills 3 rows; kernel i of a tower
sits at row i // columns, column i % columns of its tower's block; a thin gap separates
kernels and a wider one the towers. Each kernel is contrast-stretched on its own symmetric
range, ``0.5 + 0.5 * w / max|w|`` per channel (the max over its 3 x 11 x 11 weights), so a
zero weight is mid-grey, the kernel's largest weight is full brightness (or black, if it is
negative) and the hue shows the channels' balance; then upscaled by nearest neighbour
(``scale`` pixels per weight) so 11 x 11 kernels are readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch

from ...files import save_png
from ...analysis.colourfulness import colourfulness, tower_kernels
from ...checkpoint import saved_model
from ...run_folder import RunFolder
from ...trained import read_trained
from .output import check_output

COLUMNS = 16
SCALE = 5  # pixels per weight
GAP = 2  # pixels between kernels
TOWER_GAP = 12  # pixels between the towers' blocks
BACKGROUND = 1.0  # the gaps: white


@dataclass(frozen=True)
class GridLayout:
    """Where each kernel goes in the grid (pixels, after scaling)."""

    towers: int
    kernels_per_tower: int
    kernel_size: int
    columns: int = COLUMNS
    scale: int = SCALE
    gap: int = GAP
    tower_gap: int = TOWER_GAP

    @property
    def rows_per_tower(self) -> int:
        return math.ceil(self.kernels_per_tower / self.columns)

    @property
    def cell(self) -> int:
        return self.kernel_size * self.scale

    @property
    def tower_height(self) -> int:
        return self.rows_per_tower * (self.cell + self.gap) - self.gap

    @property
    def shape(self) -> Tuple[int, int]:
        """(height, width) of the whole grid."""
        width = self.columns * (self.cell + self.gap) - self.gap
        return self.towers * self.tower_height + (self.towers - 1) * self.tower_gap, width

    def tower_top(self, tower: int) -> int:
        return tower * (self.tower_height + self.tower_gap)

    def origin(self, tower: int, index: int) -> Tuple[int, int]:
        """(y, x) of the top-left pixel of kernel ``index`` of ``tower``."""
        row, column = divmod(index, self.columns)
        return self.tower_top(tower) + row * (self.cell + self.gap), column * (self.cell + self.gap)


def stretch(kernel: torch.Tensor) -> np.ndarray:
    """(3, kh, kw) weights -> (kh, kw, 3) colours in [0, 1]: ``0.5 + 0.5 * w / max|w|``
    (an all-zero kernel is uniform mid-grey)."""
    w = kernel.detach().double().cpu()
    peak = float(w.abs().max())
    rgb = 0.5 + 0.5 * w / peak if peak > 0 else torch.full_like(w, 0.5)
    return rgb.permute(1, 2, 0).numpy().astype(np.float32)


def filter_grid(towers: Sequence[torch.Tensor], *, columns: int = COLUMNS, scale: int = SCALE, gap: int = GAP,
                tower_gap: int = TOWER_GAP) -> Tuple[np.ndarray, GridLayout]:
    """Each tower's kernels (n, 3, k, k) -> the grid as an (H, W, 3) float image in [0, 1], and
    its layout: tower 0's block on top, kernel i of a tower at row i // columns, column
    i % columns, each kernel stretched (``stretch``) and upscaled ``scale`` times."""
    n, _, k, _ = towers[0].shape
    layout = GridLayout(len(towers), n, k, columns, scale, gap, tower_gap)
    grid = np.full((*layout.shape, 3), BACKGROUND, dtype=np.float32)
    for t, kernels in enumerate(towers):
        for i, kernel in enumerate(kernels):
            y, x = layout.origin(t, i)
            big = stretch(kernel).repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour upscaling
            grid[y:y + layout.cell, x:x + layout.cell] = big
    return grid, layout


def checkpoint_label(checkpoint: Union[str, Path]) -> str:
    """A checkpoint's run folder's name (``RUN/checkpoints/last.pt``), else the file's name:
    what a figure's title calls it."""
    run = RunFolder.of_checkpoint(checkpoint)
    return run.path.name if run is not None else Path(checkpoint).name


def write_filters_png(grid: np.ndarray, layout: GridLayout, scores: Sequence[float], path: Union[str, Path],
                      title: str = "") -> Path:
    """The grid at one screen pixel per grid pixel, each tower labelled with its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = layout.shape
    left, right, top, bottom = 190, 20, 50 if title else 20, 46
    fig_w, fig_h = left + width + right, top + height + bottom
    fig = plt.figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
    ax = fig.add_axes([left / fig_w, bottom / fig_h, width / fig_w, height / fig_h])
    ax.imshow(grid, interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    for t, score in enumerate(scores):
        centre = layout.tower_top(t) + layout.tower_height / 2
        name = f"tower {t}" if layout.towers > 1 else "one tower"
        paper = f"\n(GPU {t + 1} in the paper)" if layout.towers > 1 else ""
        ax.text(-12, centre, f"{name}{paper}\n{layout.kernels_per_tower} kernels\ncolourfulness {score:.2f}",
                ha="right", va="center", fontsize=10)
    fig.text(0.5, 8 / fig_h, "each kernel stretched on its own range: 0.5 + 0.5·w / max|w| (zero weight = mid-grey); "
             "colourfulness: |w − grey(w)| / |w|, mean per tower", ha="center", va="bottom", fontsize=8, color="0.3")
    if title:
        fig.text(0.5, 1 - 12 / fig_h, title, ha="center", va="top", fontsize=12)
    return save_png(fig, path)


def draw_filters(checkpoint_or_run: Union[str, Path], path: Union[str, Path], *, scale: int = SCALE,
                 overwrite: bool = False) -> Dict:
    """conv1's kernels of a checkpoint (or a run folder's last one) as a PNG at ``path``, and
    each tower's colourfulness. Returns what it drew: the scores per tower and per kernel,
    the checkpoint, its progress, and where the PNG went."""
    out = check_output(path, overwrite=overwrite, inputs=[checkpoint_or_run])
    payload = read_trained(checkpoint_or_run)
    towers = tower_kernels(payload)
    per_kernel = [colourfulness(kernels) for kernels in towers]
    scores = [float(s.mean()) for s in per_kernel]
    grid, layout = filter_grid(towers, scale=scale)
    progress = payload.get("progress") or {}
    epoch = f", after epoch {progress['epoch']}" if progress.get("epoch") is not None else ""
    variant = saved_model(payload).variant
    write_filters_png(grid, layout, scores, out,
                      title=f"{checkpoint_label(payload['path'])}: conv1 kernels ({variant}{epoch})")
    return {"checkpoint": payload["path"], "variant": variant, "progress": progress,
            "colourfulness": scores, "kernel_colourfulness": [s.tolist() for s in per_kernel], "saved_to": str(out)}
