"""The ablation's folder: its settings (``ablation.json``), one ordinary training run folder per
arm and seed (``<arm>-seed<k>/``), and what it knows about time spent.

``ablation.json`` holds what the experiment is (the arms, the seeds, the data, the resolved
recipe, the ten-crop evaluation), how it last ran (devices, precision, workers: may change
between sessions), and the wall time of every training session, so ``--resume`` and
``--report`` need nothing but the folder.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ...errors import CheckpointError, ConfigError
from ...files import write_json
from ...train.run_folder import RunFolder
from ...train.session import TrainConfig
from .arms import BASELINE, Arm, get_arms, run_name

SETTINGS = "ablation.json"
SUMMARY = "summary.json"
FORMAT = "alexnet-ablation"
VERSION = 1

#: TrainConfig fields that define the experiment: a folder continues only with the same ones.
EXPERIMENT_FIELDS = ("data", "recipe", "ten_crop")
#: TrainConfig fields set per run (the arm, its folder) or per session only (max_steps).
PER_RUN_FIELDS = ("out", "overwrite", "variant", "lrn", "overlap", "max_steps")
#: How the runs run (devices, precision, workers, ...): may change between sessions.
RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                       if f.name not in EXPERIMENT_FIELDS + PER_RUN_FIELDS)
#: The files an ablation writes beside its run folders.
OWN_FILES = (SETTINGS, "report.md", "report.json", "curves.png")


def experiment_of(config: TrainConfig) -> Dict:
    """The experiment part of a template configuration, as ablation.json stores it (the data
    as an absolute path, so the folder can be continued from elsewhere)."""
    d = config.as_dict()
    data = None if config.data is None else str(Path(config.data).expanduser().resolve())
    return {"data": data, "recipe": d["recipe"], "ten_crop": d["ten_crop"]}


def runtime_of(config: TrainConfig) -> Dict:
    """How the runs run, as ablation.json stores it (``--devices`` and ``--layout`` as spelled)."""
    d = config.as_dict()
    return {k: v for k, v in d.items() if k in RUNTIME_FIELDS + ("layout",)}


def _flat(settings: Dict) -> Dict:
    flat = {"arms": settings["arms"], "seeds": settings["seeds"]}
    for key, value in settings["experiment"].items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


class AblationFolder:
    """An ablation's folder and its ``ablation.json``."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS

    # -- creating and reopening ---------------------------------------------------------------
    @classmethod
    def start(cls, path: Union[str, Path], arms: Sequence[str], seeds: Sequence[int],
              config: TrainConfig) -> "AblationFolder":
        """A new ablation in ``path`` (absent or empty), or the one already there when its
        experiment is this one (running the same command again continues it). Writes nothing."""
        folder = cls(path)
        settings = {"format": FORMAT, "version": VERSION, "arms": list(arms), "seeds": list(seeds),
                    "experiment": experiment_of(config), "runtime": runtime_of(config),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv, "timing": {}}
        if folder.path.exists() and not folder.path.is_dir():
            raise ConfigError(f"--out {folder.path}: exists and is not a folder")
        if folder.settings_path.exists():
            saved = folder.read()
            ours, theirs = _flat(settings), _flat(saved)
            differ = [k for k in dict.fromkeys([*ours, *theirs]) if ours.get(k) != theirs.get(k)]
            if differ:
                k = differ[0]
                raise ConfigError(f"--out {folder.path} holds an ablation with other settings ({k}: "
                                  f"{theirs.get(k)!r} there, {ours.get(k)!r} here); continue it with "
                                  f"alexnet ablate --resume {folder.path}, or choose another --out")
            folder.settings = {**saved, "runtime": settings["runtime"]}
            return folder
        if folder.path.is_dir() and any(folder.path.iterdir()):
            raise ConfigError(f"--out {folder.path}: holds other files and no {SETTINGS}; an ablation needs a "
                              f"new or empty folder")
        folder.settings = settings
        return folder

    @classmethod
    def open(cls, path: Union[str, Path], option: str = "--resume") -> "AblationFolder":
        folder = cls(path)
        if not folder.path.is_dir():
            raise ConfigError(f"{option} {folder.path}: no such folder")
        if not folder.settings_path.exists():
            raise ConfigError(f"{option} {folder.path}: not an ablation folder ({SETTINGS} is missing)")
        folder.settings = folder.read()
        return folder

    def read(self) -> Dict:
        try:
            settings = json.loads(self.settings_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{self.settings_path}: unreadable ({error})") from None
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise CheckpointError(f"{self.settings_path}: not an ablation's settings (no '{FORMAT}' marker)")
        if int(settings.get("version", 0)) > VERSION:
            raise CheckpointError(f"{self.settings_path}: written by a newer alexnet (version "
                                  f"{settings['version']}); upgrade alexnet")
        get_arms(settings["arms"])  # an unknown arm: one line
        return settings

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.settings_path, self.settings)

    # -- what it holds --------------------------------------------------------------------------
    @property
    def arms(self) -> List[Arm]:
        return [BASELINE, *get_arms(self.settings["arms"])]

    @property
    def seeds(self) -> List[int]:
        return list(self.settings["seeds"])

    @property
    def builtin(self) -> bool:
        return self.settings["experiment"]["data"] is None

    def template(self, **runtime) -> TrainConfig:
        """The baseline's configuration: the experiment with the stored runtime, ``runtime``
        (devices, workers, ...) replacing it."""
        config = TrainConfig.from_dict({**self.settings["runtime"], **self.settings["experiment"]})
        not_runtime = sorted(set(runtime) - set(RUNTIME_FIELDS))
        if not_runtime:
            raise ConfigError(f"continuing an ablation keeps its own {', '.join(not_runtime)}; only how the runs "
                              f"run may change ({', '.join(RUNTIME_FIELDS)})")
        return dataclasses.replace(config, **runtime)

    def plan(self) -> List[tuple]:
        """(arm, seed) in the order they run: every arm of seed 0, then of seed 1, ...; so an
        ablation stopped early has whole seeds to compare."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms]

    def run_dir(self, arm: Arm, seed: int) -> Path:
        return self.path / run_name(arm, seed)

    def state(self, arm: Arm, seed: int) -> str:
        """finished (summary.json), interrupted (a checkpoint to resume from), started (killed
        before its first checkpoint: starts again), or new."""
        run = RunFolder(self.run_dir(arm, seed))
        if (run.path / SUMMARY).exists():
            return "finished"
        if run.last_checkpoint.exists():
            return "interrupted"
        return "started" if run.holds_run() else "new"

    # -- time ---------------------------------------------------------------------------------
    def session_started(self, name: str) -> float:
        """Mark a training session of run ``name`` open; one still open from before was killed
        without being timed, and is counted as such."""
        timing = self.settings["timing"].setdefault(name, {"seconds": 0.0, "sessions": 0, "untimed_sessions": 0})
        if timing.pop("open", None) is not None:
            timing["untimed_sessions"] += 1
        timing["open"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.save()
        return time.perf_counter()

    def session_ended(self, name: str, started: float) -> float:
        timing = self.settings["timing"][name]
        timing.pop("open", None)
        timing["seconds"] += time.perf_counter() - started
        timing["sessions"] += 1
        self.save()
        return timing["seconds"]

    def seconds(self, name: str) -> Optional[float]:
        timing = self.settings.get("timing", {}).get(name)
        return None if not timing or not timing.get("sessions") else float(timing["seconds"])
