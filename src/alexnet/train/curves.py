"""Curves of training runs: the one place a run's per-epoch records become lines on axes.

Three pictures use it: a run's own ``curves.png`` (``plot_curves``, redrawn after every epoch),
``alexnet plot RUN...`` (several runs on shared axes) and ``alexnet ablate``'s curves (one colour
per arm, each seed a thin line, the arm's mean a thick one):

    plot_runs({"baseline": ["runs/a-seed0", "runs/a-seed1"], "no-lrn": [...]}, "curves.png",
              metrics=("val_top1_error", ("val_loss", "train_loss")))

The values are the runs' own per-epoch records (``metrics.jsonl``, kind "epoch"), so any run
folder can be plotted beside any other. A run is given as its folder or as its records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..files import save_png
from ..run_folder import RunFolder

PathLike = Union[str, Path]
#: A run: its folder, or the records of its metrics.jsonl.
Run = Union[PathLike, Sequence[Mapping]]
#: A panel: one metric, or several sharing the axes (told apart by line style).
Panel = Union[str, Sequence[str]]


@dataclass(frozen=True)
class EpochMetric:
    """What an epoch record holds, as a line: where it is, its unit, and its names."""

    key: str  # the epoch record's key
    label: str  # the axis label when the metric has its panel to itself
    quantity: str  # the axis label when it shares a panel with metrics of the same quantity
    short: str  # the line's name beside others on the same panel
    scale: float = 1.0  # factor to the plotted unit
    index: Optional[int] = None  # an entry of a list-valued record (a tower's score)


EPOCH_METRICS: Dict[str, EpochMetric] = {
    "val_top1_error": EpochMetric("val_top1_error", "validation top-1 error (%, centre crop)", "error (%)",
                                  "validation top-1, centre crop", 100.0),
    "val_top5_error": EpochMetric("val_top5_error", "validation top-5 error (%, centre crop)", "error (%)",
                                  "validation top-5, centre crop", 100.0),
    "val_loss": EpochMetric("val_loss", "validation loss", "cross-entropy loss", "validation, centre crop"),
    "train_loss": EpochMetric("train_loss", "training loss", "cross-entropy loss", "training, augmented crops"),
    "train_error": EpochMetric("train_error", "training top-1 error (%, augmented crops)", "error (%)",
                               "training top-1, augmented crops", 100.0),
    "conv1_colourfulness_tower0": EpochMetric("conv1_colourfulness", "conv1 colourfulness, tower 0",
                                              "conv1 colourfulness (0 grey, 1 pure colour)", "tower 0", index=0),
    "conv1_colourfulness_tower1": EpochMetric("conv1_colourfulness", "conv1 colourfulness, tower 1",
                                              "conv1 colourfulness (0 grey, 1 pure colour)", "tower 1", index=1),
}

#: Named panels, for ``alexnet plot --metric``: validation solid, training dashed.
PANELS: Dict[str, Tuple[str, ...]] = {
    "loss": ("val_loss", "train_loss"),
    "error": ("val_top1_error", "train_error"),
    "top5": ("val_top5_error",),
    "colourfulness": ("conv1_colourfulness_tower0", "conv1_colourfulness_tower1"),
}
#: The line style of a panel's first, second, ... metric.
STYLES = ({"ls": "-", "marker": "o"}, {"ls": "--", "marker": "s"}, {"ls": ":", "marker": "^"})


def run_records(run: Run) -> List[Mapping]:
    """A run's records: read from its folder, or the records themselves."""
    if isinstance(run, (str, Path)):
        return RunFolder(run).read_metrics()
    return list(run)


def epoch_curve(run: Run, metric: str) -> List[Tuple[int, float]]:
    """(epoch, value in the plotted unit) for each epoch the run recorded the metric at."""
    m = EPOCH_METRICS[metric]
    curve = []
    for r in run_records(run):
        value = r.get(m.key) if r.get("kind") == "epoch" else None
        if m.index is not None:
            value = value[m.index] if isinstance(value, (list, tuple)) and len(value) > m.index else None
        if value is not None and math.isfinite(float(value)):
            curve.append((int(r["epoch"]), m.scale * float(value)))
    return curve


def group_mean(curves: Sequence[List[Tuple[int, float]]]) -> List[Tuple[int, float]]:
    """The mean over runs at each epoch every run of the group has reached."""
    curves = [dict(c) for c in curves if c]
    if not curves:
        return []
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    return [(epoch, sum(c[epoch] for c in curves) / len(curves)) for epoch in shared]


def panels_of(metrics: Iterable[Panel]) -> List[Tuple[str, ...]]:
    """Metric names and tuples of them -> panels; a panel's name (``PANELS``) stands for its metrics."""
    panels = []
    for entry in metrics:
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        names = tuple(n for name in names for n in PANELS.get(name, (name,)))
        unknown = [n for n in names if n not in EPOCH_METRICS]
        if unknown:
            raise ValueError(f"not an epoch metric: {', '.join(unknown)}; choose from "
                             f"{', '.join([*PANELS, *EPOCH_METRICS])}")
        panels.append(names)
    return panels


def draw_epoch_panels(axes, groups: Mapping[str, Sequence[Run]], metrics: Sequence[Panel]) -> int:
    """Per panel (an axes of ``axes``), per group one colour: every run a thin line, the group's
    mean (over the epochs all its runs reached) a thick one; a panel's metrics told apart by line
    style. A group named "" labels its lines by metric alone. Returns the last epoch drawn."""
    import matplotlib.pyplot as plt  # matplotlib only where a figure is drawn
    from matplotlib.ticker import MaxNLocator

    panels = panels_of(metrics)
    records = {label: [run_records(run) for run in runs] for label, runs in groups.items()}
    colours = plt.get_cmap("tab10").colors
    several = any(len(runs) > 1 for runs in records.values())  # groups of runs: say how many each line is
    last_epoch = 1
    for ax, panel in zip(axes, panels):
        for k, (label, runs) in enumerate(records.items()):
            colour = colours[k % len(colours)]
            for metric, style in zip(panel, STYLES * len(panel)):
                curves = [c for c in (epoch_curve(run, metric) for run in runs) if c]
                last_epoch = max([last_epoch, *(epoch for c in curves for epoch, _ in c)])
                if len(curves) > 1:
                    for curve in curves:
                        ax.plot(*zip(*curve), color=colour, lw=0.8, alpha=0.45, ls=style["ls"], marker=".", ms=3)
                mean = group_mean(curves)
                if not mean:
                    continue
                parts = [label] if label else []
                if len(panel) > 1 or not label:
                    parts.append(EPOCH_METRICS[metric].short)
                name = ", ".join(parts)
                if len(curves) > 1:
                    name += f" (mean of {len(curves)} runs)"
                elif several:
                    name += " (1 run)"
                ax.plot(*zip(*mean), color=colour, lw=2.6 if len(curves) > 1 else 1.8, ms=5 if len(curves) > 1 else 4,
                        label=name, **style)
        quantities = {EPOCH_METRICS[m].quantity for m in panel}
        ax.set(xlabel="epoch", ylabel=quantities.pop() if len(panel) > 1 and len(quantities) == 1
               else " / ".join(EPOCH_METRICS[m].label for m in panel))
    for ax in list(axes)[:len(panels)]:
        ax.set_xlim(0.5, last_epoch + 0.5)
        if last_epoch <= 12:
            ax.set_xticks(range(1, last_epoch + 1))  # whole epochs, even for a one-epoch run
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return last_epoch


def plot_runs(groups: Mapping[str, Sequence[Run]], path: PathLike, *,
              metrics: Sequence[Panel] = ("val_top1_error",), title: str = "") -> Path:
    """One panel per entry of ``metrics`` (a metric, a tuple of metrics sharing the axes, or a
    name of ``PANELS``), drawn by ``draw_epoch_panels``. Runs with no epoch record yet are left
    out. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels_of(metrics)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    draw_epoch_panels(axes[0], groups, panels)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def _fractional_epochs(records: Sequence[Mapping]) -> List[Tuple[float, Mapping]]:
    """Each step record at its place in epochs (1.0 = the end of the first epoch), so per-step
    lines share the x axis of the per-epoch ones."""
    steps = [r for r in records if r.get("kind") == "step"]
    ends = {int(r["epoch"]): int(r["images"]) for r in records if r.get("kind") == "epoch"}
    per_epoch = (ends[min(ends)] / min(ends)) if ends else max([1, *(int(r["images"]) for r in steps
                                                                     if r.get("epoch") == 1)])
    return [(int(r["images"]) / per_epoch, r) for r in steps]


def plot_curves(records: Iterable[Mapping], path: PathLike, title: Optional[str] = None) -> Path:
    """A run's own curves: loss and error per epoch (validation and training) drawn by
    ``draw_epoch_panels`` with the training loss of every logged step under them, the learning
    rate per step, and conv1's colourfulness per tower when the run recorded it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    colourful = any(r.get("kind") == "epoch" and r.get("conv1_colourfulness") for r in records)
    panels: List[Panel] = ["loss", ("val_top1_error", "train_error", "val_top5_error")]
    panels += ["colourfulness"] if colourful else []
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.2 * (len(panels) + 1), 4.2))
    ax_loss, ax_err, ax_lr = axes[0], axes[1], axes[-1]
    last_epoch = draw_epoch_panels(axes[:len(panels)], {"": [records]}, panels)
    steps = _fractional_epochs(records)
    if steps:
        x = [at for at, _ in steps]
        ax_loss.plot(x, [r["loss"] for _, r in steps], color="tab:gray", lw=0.8, alpha=0.7,
                     label="training, per logged step", zorder=1)
        ax_lr.plot(x, [r["lr"] for _, r in steps], color="tab:green")
        right = max(last_epoch + 0.5, max(x) + 0.05)
        for ax in axes:
            ax.set_xlim(0, right)
    chance = next((r.get("chance_loss") for r in records if r.get("chance_loss")), None)
    if chance:
        ax_loss.axhline(chance, color="grey", ls=":", lw=1, label=f"chance (ln {round(math.exp(chance))})")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8)
    ax_loss.set_title("loss")
    ax_err.set(title="error", ylim=(0, 100))
    if colourful:
        axes[2].set(title="conv1 colourfulness per tower", ylim=(0, 1))
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    ax_lr.set_xticks(ax_loss.get_xticks())  # the epoch panels' whole epochs
    ax_lr.set_xlim(ax_loss.get_xlim())
    ax_lr.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
