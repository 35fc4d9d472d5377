"""The paper's figures from any run: conv1's kernels per tower with their colourfulness
(Figure 3), fc7's nearest neighbours (Figure 4), and the curves of several runs.

    filters     draw_filters(run_or_checkpoint, "filters.png"): the grid, the towers' scores
    neighbours  draw_neighbours(run_or_checkpoint, "neighbours.png"): the search, the cached features
    plot        plot_run_folders([run, ...], "curves.png"): runs on shared axes
    output      check_output: the PNG's path is checked before any long work

See docs/figures.md.
"""

from .filters import GridLayout, draw_filters, filter_grid, stretch
from .neighbours import cached_features, draw_neighbours, nearest_neighbours
from .output import check_output
from .plot import plot_run_folders

__all__ = ["GridLayout", "cached_features", "check_output", "draw_filters", "draw_neighbours", "filter_grid", "nearest_neighbours", "plot_run_folders", "stretch"]
