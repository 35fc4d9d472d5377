"""``alexnet plot``: the curves of one or more run folders on shared axes, through the one
function that draws every run's curves (``alexnet.train.curves.plot_runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ...errors import CheckpointError, ConfigError
from ...train.curves import epoch_curve, panels_of, plot_runs
from ...run_folder import METRICS, RunFolder
from .output import check_output

DEFAULT_PANELS = ("loss", "error")


def check_run_folder(path: Union[str, Path]) -> Path:
    """A run folder with at least one finished epoch, or a ``CheckpointError`` naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a run folder (a file; give the folder alexnet train wrote)")
    if not RunFolder(path).metrics_path.is_file():
        raise CheckpointError(f"{path}: not a run folder ({METRICS} is missing)")
    if not epoch_curve(path, "val_top1_error"):
        raise CheckpointError(f"{path}: no finished epoch yet ({METRICS} holds no epoch record to plot)")
    return path


def default_labels(runs: Sequence[Path]) -> List[str]:
    """Each run's folder name; where two share a name, their paths as given."""
    names = [run.name or str(run) for run in runs]
    return [str(run) if names.count(name) > 1 else name for run, name in zip(runs, names)]


def plot_run_folders(runs: Sequence[Union[str, Path]], path: Union[str, Path], *,
                     labels: Optional[Sequence[str]] = None, metrics: Sequence = DEFAULT_PANELS,
                     title: str = "", overwrite: bool = False) -> Dict:
    """Training and validation loss and error (or ``metrics``: names of
    ``alexnet.train.curves.PANELS`` or ``EPOCH_METRICS``) of ``runs`` per epoch, one colour per
    label (default: the folder's name). Runs given the same label are one group: each a thin
    line, their mean a thick one. Written as a PNG at ``path``."""
    out = check_output(path, overwrite=overwrite)
    if not runs:
        raise ConfigError("give at least one run folder")
    try:
        panels = panels_of(metrics)
    except ValueError as error:
        raise ConfigError(f"--metric: {error}") from None
    folders = [check_run_folder(run) for run in runs]
    if labels:
        if len(labels) != len(folders):
            raise ConfigError(f"--label given {len(labels)} times for {len(folders)} run folders; give one per run")
        labels = list(labels)
    else:
        labels = default_labels(folders)
    groups: Dict[str, List[Path]] = {}
    for label, folder in zip(labels, folders):
        groups.setdefault(label, []).append(folder)
    plot_runs(groups, out, metrics=panels, title=title)
    problems = [line for folder in folders for line in _problems(folder)]
    return {"runs": [str(f) for f in folders], "labels": labels, "saved_to": str(out), "left_out": problems}


def _problems(folder: Path) -> List[str]:
    """The lines of a run's metrics.jsonl that were left out of its curves."""
    run = RunFolder(folder)
    run.read_metrics()
    return run.metrics_problems
