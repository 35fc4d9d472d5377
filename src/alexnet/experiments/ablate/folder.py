"""The ablation's folder: its settings (``ablation.json``), one ordinary training run folder per
arm and seed (``<arm>-seed<k>/``, a ``RunFolder``), and what it knows about time spent.

``ablation.json`` holds what the experiment is (the baseline and the arms, the seeds, the data,
the net, the preprocessing and the recipe), how it last ran (the runtime settings: devices,
precision, workers... may change between sessions), and the wall time of every training
session, so ``--resume`` and ``--report`` need nothing but the folder. Version 1 (the paper's
arms by name, the flat configuration of its time) is read through ``_migrate_v1``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ...errors import CheckpointError, ConfigError
from ...files import check_output, write_json
from ...run_folder import RunFolder, migrate, quote
from ...train.config import RUN_PARTS, TrainConfig, TrainRuntime, options
from .arms import BASELINE, Arm, get_arms, run_folder_name

SETTINGS = "ablation.json"
FORMAT = "alexnet-ablation"
VERSION = 2


def experiment_of(config: TrainConfig) -> Dict:
    """The experiment part of a template configuration, as ablation.json stores it (the data
    as an absolute path, so the folder can be continued from elsewhere)."""
    data = None if config.data is None else str(Path(config.data).expanduser().resolve())
    return {"data": data, **{part: getattr(config, part).as_dict() for part in RUN_PARTS}}


def runtime_of(config: TrainConfig) -> Dict:
    """How the runs run, as ablation.json stores it (``--devices`` and ``--layout`` as spelled).
    A session's --max-steps stops that session only: it is not kept for the next."""
    return config.runtime.replace(max_steps=None).as_dict()


def _flat(settings: Dict) -> Dict:
    """The settings that must match for a folder to continue, one level deep ("recipe.lr")."""
    flat = {"baseline": settings["baseline"], "arms": settings["arms"], "seeds": settings["seeds"]}
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
    def start(cls, path: Union[str, Path], arms: Sequence[Arm], seeds: Sequence[int], config: TrainConfig,
              baseline: Arm = BASELINE) -> "AblationFolder":
        """A new ablation in ``path`` (absent or empty), or the one already there when its
        experiment is this one (running the same command again continues it; with more seeds,
        it trains the new ones too). Writes nothing."""
        folder = cls(path)
        settings = {"format": FORMAT, "version": VERSION, "baseline": baseline.as_dict(),
                    "arms": [arm.as_dict() for arm in arms], "seeds": list(seeds),
                    "experiment": experiment_of(config), "runtime": runtime_of(config),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv, "timing": {}}
        # An ablation's own folder continues (the same command again); anything else must be new or empty.
        check_output(folder.path, "--out", folder=True, overwrite=True, ours=lambda p: (p / SETTINGS).is_file())
        if folder.settings_path.exists():
            saved = folder.read()
            ours, theirs = _flat(settings), _flat(saved)
            # More seeds than before continue the same experiment: the new seeds are added.
            grows = list(seeds[:len(saved["seeds"])]) == saved["seeds"]
            differ = [k for k in dict.fromkeys([*ours, *theirs]) if ours.get(k) != theirs.get(k)
                      and not (k == "seeds" and grows)]
            if differ:
                k = differ[0]
                raise ConfigError(f"--out {folder.path} holds an ablation with other settings ({k}: "
                                  f"{theirs.get(k)!r} there, {ours.get(k)!r} here); continue it with "
                                  f"alexnet ablate --resume {quote(folder.path)}, or choose another --out")
            folder.settings = {**saved, "runtime": settings["runtime"], "seeds": list(seeds)}
            return folder
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
        """ablation.json in this version's shape."""
        try:
            settings = json.loads(self.settings_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{self.settings_path}: unreadable ({error})") from None
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise CheckpointError(f"{self.settings_path}: not an ablation's settings (no '{FORMAT}' marker)")
        if int(settings.get("version", 0)) > VERSION:
            raise CheckpointError(f"{self.settings_path}: written by a newer alexnet (version "
                                  f"{settings['version']}); upgrade alexnet")
        if int(settings.get("version", 1)) < 2:
            settings = _migrate_v1(settings, str(self.settings_path))
        self.template_of(settings)  # an unknown setting: one line
        return settings

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.settings_path, self.settings)

    # -- what it holds --------------------------------------------------------------------------
    @property
    def arms(self) -> List[Arm]:
        """The baseline first, then the arms."""
        return [Arm.from_dict(self.settings["baseline"]), *(Arm.from_dict(a) for a in self.settings["arms"])]

    @property
    def seeds(self) -> List[int]:
        return list(self.settings["seeds"])

    @property
    def builtin(self) -> bool:
        return self.settings["experiment"]["data"] is None

    def template_of(self, settings: Dict) -> TrainConfig:
        return TrainConfig.from_dict({"config_version": 2, **settings["experiment"], "runtime": settings["runtime"]},
                                     str(self.settings_path))

    def template(self, **runtime) -> TrainConfig:
        """The baseline's configuration: the experiment with the stored runtime, ``runtime``
        (devices, workers, ...: runtime settings only) replacing parts of it."""
        not_runtime = sorted(set(runtime) - set(TrainRuntime.names()))
        if not_runtime:
            raise ConfigError(f"--resume continues the ablation's own settings ({self.settings_path}); drop "
                              f"{options(not_runtime)} (only how the runs run may change: --devices, --amp, "
                              f"--workers, ...)")
        return self.template_of(self.settings).replace(**runtime)

    def runs_in_order(self) -> List[tuple]:
        """(arm, seed) in the order they run: every arm of seed 0, then of seed 1, ...; so an
        ablation stopped early has whole seeds to compare."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms]

    def run(self, arm: Arm, seed: int) -> RunFolder:
        return RunFolder(self.path / run_folder_name(arm, seed))

    def state(self, arm: Arm, seed: int) -> str:
        """finished (summary.json), interrupted (a checkpoint to resume from), started (killed
        before its first checkpoint: starts again), or new."""
        run = self.run(arm, seed)
        if run.finished():
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


def _migrate_v1(settings: Dict, where: str) -> Dict:
    """Version 1: the paper's arms by name, the experiment (data, a flat recipe that held the
    initialization, the dropout and the preprocessing, ten_crop) and a flat runtime."""
    experiment, runtime = dict(settings["experiment"]), dict(settings["runtime"])
    flat = migrate({**runtime, "recipe": experiment["recipe"], "ten_crop": experiment.get("ten_crop", True)}, where)
    v2 = {**settings, "version": VERSION, "baseline": BASELINE.as_dict(),
          "arms": [arm.as_dict() for arm in get_arms(settings["arms"])],
          "experiment": {"data": experiment["data"], **{part: flat[part] for part in RUN_PARTS}},
          "runtime": flat["runtime"]}
    return v2
