"""A run is a folder: configuration, class names, dataset statistics, metrics (one JSON record
per line), checkpoints and a PNG of the curves (drawn by ``alexnet.train.curves``). Every file
is written atomically (a temporary file in the same folder, then a rename), so an interrupted
write never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from ..errors import CheckpointError, ConfigError
from ..files import json_default, write_atomically, write_json
from .config import migrate

CONFIG = "config.json"
CLASSES = "classes.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
SUMMARY = "summary.json"  # written when the run ends: its final figures
EVAL = "eval.json"  # written by alexnet eval
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
STATS_DIR = "stats"


class RunFolder:
    """The files of one training run."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    # -- layout -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES

    @property
    def last_checkpoint(self) -> Path:
        return self.path / CHECKPOINTS / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.path / CHECKPOINTS / BEST

    @property
    def stats_dir(self) -> Path:
        return self.path / STATS_DIR

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL

    @classmethod
    def of_checkpoint(cls, checkpoint: Union[str, Path]) -> Optional["RunFolder"]:
        """The run folder a checkpoint file belongs to (``RUN/checkpoints/NAME.pt``), or None
        for a checkpoint kept elsewhere."""
        path = Path(checkpoint)
        return cls(path.parent.parent) if path.parent.name == CHECKPOINTS else None

    def checkpoint_to_read(self) -> Path:
        """Its last checkpoint, or its best one where the last was removed (a finished ablation
        run keeps only ``best.pt``)."""
        for candidate in (self.last_checkpoint, self.best_checkpoint):
            if candidate.exists():
                return candidate
        raise CheckpointError(f"{self.path}: a folder without {CHECKPOINTS}/{LAST} or {BEST}; give a checkpoint file "
                              f"or a run folder")

    def finished(self) -> bool:
        """The run ended (its summary is written); an interrupted one has a checkpoint but no summary."""
        return self.summary_path.exists()

    def holds_run(self) -> bool:
        return self.config_path.exists() or self.last_checkpoint.exists() or self.metrics_path.exists()

    # -- creating and reopening ---------------------------------------------------------------
    @classmethod
    def create(cls, path: Union[str, Path], overwrite: bool = False) -> "RunFolder":
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"--out {run.path}: exists and is not a folder")
        if run.holds_run():
            if not overwrite:
                raise ConfigError(f"--out {run.path} already holds a run; use --resume {run.path} to continue it "
                                  f"or --overwrite to start again")
            # Start again: old metrics and checkpoints go; nothing outside the run's own files is touched.
            for name in (METRICS, CURVES, CONFIG, CLASSES):
                (run.path / name).unlink(missing_ok=True)
            for name in (LAST, BEST):
                (run.path / CHECKPOINTS / name).unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: Union[str, Path]) -> "RunFolder":
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"--resume {run.path}: no such run folder")
        if not run.last_checkpoint.exists():
            raise CheckpointError(f"--resume {run.path}: no checkpoint in it ({CHECKPOINTS}/{LAST} is missing)")
        return run

    def disk_bytes(self) -> int:
        """What the run folder holds, in bytes."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    # -- records ------------------------------------------------------------------------------
    def write_config(self, config: Dict) -> None:
        write_json(self.config_path, config)

    def read_config(self) -> Dict:
        """config.json in this version's shape (``alexnet.train.config.migrate``)."""
        try:
            saved = json.loads(self.config_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{self.config_path}: unreadable ({error})") from None
        return migrate(saved, str(self.config_path))

    def write_classes(self, classes: List[str]) -> None:
        write_json(self.path / CLASSES, list(classes))

    def write_summary(self, summary: Dict) -> None:
        write_json(self.summary_path, summary)

    def read_summary(self) -> Dict:
        """The run's summary.json, or {} while it has none (or it cannot be read)."""
        return _read_json(self.summary_path)

    def append_metrics(self, record: Dict) -> None:
        """One JSON object per line; flushed and synced so a crash loses at most this line."""
        line = json.dumps(record, default=json_default)
        with open(self.metrics_path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> List[Dict]:
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
        return records

    def truncate_metrics_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint's step, so nothing is counted twice."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        def write(tmp):
            with open(tmp, "w") as handle:
                for r in kept:
                    handle.write(json.dumps(r, default=json_default) + "\n")
        write_atomically(self.metrics_path, write)


def _read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def trained_data(config: Mapping) -> Optional[str]:
    """Where a run's data was, from its configuration (config.json, or a checkpoint's copy):
    the root set-up resolved, else the ``--data`` it was given (None: the built-in dataset)."""
    return config.get("resolved", {}).get("data_root") or config.get("data")


def check_classes(trained: Sequence[str], dataset, where: Union[str, Path], root: Union[str, Path],
                  hint: str = "") -> None:
    """A run trained on ``trained`` classes meets ``dataset`` at ``root``: the same class names
    in the same order, or one line saying how they differ (``hint``: what to do about it)."""
    if list(trained) != list(dataset.classes):
        raise CheckpointError(f"{where}: trained on {len(trained)} classes, but {root} has "
                              f"{len(dataset.classes)} (or in another order){hint}")
