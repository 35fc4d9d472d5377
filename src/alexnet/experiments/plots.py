"""Curves of several training runs on shared axes: one colour per group of runs (an ablation's
arm, a recipe tried with several seeds), each run a thin line, the group's mean a thick one.

    plot_runs({"baseline": ["runs/a-seed0", "runs/a-seed1"], "no-lrn": [...]}, "curves.png")

The values are the runs' own per-epoch records (``metrics.jsonl``, kind "epoch"), so any run
folder can be plotted beside any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

from ..files import save_png
from ..train.runs import RunFolder

PathLike = Union[str, Path]

#: What an epoch record holds, as an axis: label, and the factor to the plotted unit.
EPOCH_METRICS: Dict[str, Tuple[str, float]] = {
    "val_top1_error": ("validation top-1 error (%, centre crop)", 100.0),
    "val_top5_error": ("validation top-5 error (%, centre crop)", 100.0),
    "val_loss": ("validation loss", 1.0),
    "train_loss": ("training loss", 1.0),
    "train_error": ("training top-1 error (%, augmented crops)", 100.0),
}


def epoch_curve(run_dir: PathLike, metric: str) -> List[Tuple[int, float]]:
    """(epoch, value in the plotted unit) for each epoch the run recorded."""
    _, scale = EPOCH_METRICS[metric]
    return [(int(r["epoch"]), scale * float(r[metric])) for r in RunFolder(run_dir).read_metrics()
            if r.get("kind") == "epoch" and r.get(metric) is not None]


def group_mean(curves: Sequence[List[Tuple[int, float]]]) -> List[Tuple[int, float]]:
    """The mean over runs at each epoch every run of the group has reached."""
    curves = [dict(c) for c in curves if c]
    if not curves:
        return []
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    return [(epoch, sum(c[epoch] for c in curves) / len(curves)) for epoch in shared]


def plot_runs(groups: Mapping[str, Sequence[PathLike]], path: PathLike, *,
              metrics: Sequence[str] = ("val_top1_error",), title: str = "") -> Path:
    """One panel per metric, epochs on x; per group one colour: every run a thin line, the
    group's mean (over the epochs all its runs reached) a thick one. Runs with no epoch record
    yet are left out. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    unknown = [m for m in metrics if m not in EPOCH_METRICS]
    if unknown:
        raise ValueError(f"not an epoch metric: {', '.join(unknown)}; choose from {', '.join(EPOCH_METRICS)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    last_epoch = 1
    for ax, metric in zip(axes[0], metrics):
        for k, (label, runs) in enumerate(groups.items()):
            colour = colours[k % len(colours)]
            curves = [c for c in (epoch_curve(run, metric) for run in runs) if c]
            last_epoch = max([last_epoch, *(epoch for c in curves for epoch, _ in c)])
            if len(curves) > 1:
                for curve in curves:
                    ax.plot(*zip(*curve), color=colour, lw=0.8, alpha=0.45, marker=".", ms=3)
            mean = group_mean(curves)
            if mean:
                ax.plot(*zip(*mean), color=colour, lw=2.6, marker="o", ms=5,
                        label=f"{label} (mean of {len(curves)} runs)" if len(curves) > 1 else f"{label} (1 run)")
        name, _ = EPOCH_METRICS[metric]
        ax.set(xlabel="epoch", ylabel=name)
        ax.set_xlim(0.5, last_epoch + 0.5)
        if last_epoch <= 12:
            ax.set_xticks(range(1, last_epoch + 1))  # whole epochs, even for a one-epoch run
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    return save_png(fig, path)
