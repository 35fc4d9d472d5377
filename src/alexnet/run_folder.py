"""A run is a folder: configuration, class names, dataset statistics, metrics (one JSON record
per line), checkpoints and a PNG of the curves (drawn by ``alexnet.train.curves``). Every file
is written atomically (a temporary file in the same folder, then a rename), so an interrupted
write never leaves half a file.

Training writes run folders (``alexnet.train``); evaluation, the figures, the ablation's report
and resume read them, through ``RunFolder``. config.json's versions are read here too
(``migrate``): what a run is, in the shape ``alexnet.train.config.TrainConfig`` reads.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from .data.imagenet import are_ilsvrc_synsets
from .data.preprocess import PreprocessConfig
from .errors import CheckpointError, ConfigError
from .files import (PART, FolderLock, check_output, json_default, remove_stale_parts, storage_error, write_atomically,
                    write_json)
from .model.config import ModelConfig

#: config.json's layout: 2 since the parts are nested (1: one flat dict, see ``migrate``).
CONFIG_VERSION = 2

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

    def is_run(self) -> bool:
        """Whether the folder is a run this package wrote (its config.json is an alexnet
        configuration, or it holds an alexnet checkpoint), however far it got: what ``create``
        may clear. A folder of someone's own files that happen to share a run's names is not."""
        try:
            config = json.loads(self.config_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            config = None
        if isinstance(config, dict) and ("config_version" in config or "recipe" in config):
            return True
        return any(is_checkpoint_file(p) for p in (self.last_checkpoint, self.best_checkpoint))

    # -- creating and reopening ---------------------------------------------------------------
    @classmethod
    def create(cls, path: Union[str, Path], overwrite: bool = False) -> "RunFolder":
        """A new run's folder, locked for this process (``writer``): absent, empty, or one
        whose run never saved a checkpoint (a start that failed: it is started again). A
        folder holding a run is refused unless ``overwrite``; a folder holding anything that
        is not a run is refused in any case (``files.check_output``), as is one another
        process writes, before anything in it is touched."""
        run = cls(path)
        check_output(run.path, "--out", folder=True, overwrite=True, ours=lambda folder: cls(folder).is_run())
        run.created = not run.path.exists()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(error, run.path, "creating the run folder") from None
        try:
            run.acquire()
        except BaseException:
            if run.created:  # this start made the folder: it goes again
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        try:
            if run.holds_run() and not overwrite and run.saved_something():
                raise ConfigError(f"--out {run.path} already holds a run; use --resume {quote(run.path)} to "
                                  f"continue it or --overwrite to start again")
            run.restarted = run.holds_run()
            run.clear()
        except BaseException:
            run.release()
            raise
        return run

    @classmethod
    def open(cls, path: Union[str, Path]) -> "RunFolder":
        """A run folder to resume: it exists and holds a last checkpoint (not yet locked)."""
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"--resume {run.path}: no such run folder")
        if not run.last_checkpoint.exists():
            raise CheckpointError(f"--resume {run.path}: no checkpoint in it ({CHECKPOINTS}/{LAST} is missing)")
        return run

    metrics_problems: List[str] = []  # what read_metrics left out, one line each
    created = False  # create() made the folder
    restarted = False  # create() started again in a folder an earlier start left (or --overwrite)
    writer: Optional[FolderLock] = None

    def acquire(self) -> "RunFolder":
        """Become the folder's one writer (``BusyError`` while another process is), and remove
        the half-written files a killed writer left."""
        self.writer = FolderLock(self.path, "run").acquire()
        remove_stale_parts(self.path)
        return self

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def saved_something(self) -> bool:
        """A checkpoint or a summary: what a start that failed before its first save lacks."""
        return self.last_checkpoint.exists() or self.best_checkpoint.exists() or self.finished()

    def clear(self) -> None:
        """Remove the run's own files (to start again); nothing else in the folder is touched."""
        for name in (METRICS, CURVES, CONFIG, CLASSES, SUMMARY, EVAL):
            (self.path / name).unlink(missing_ok=True)
        for name in (LAST, BEST):
            (self.path / CHECKPOINTS / name).unlink(missing_ok=True)
        shutil.rmtree(self.stats_dir, ignore_errors=True)

    def discard_start(self) -> None:
        """A start that failed before training: its files go, and the folder too if this start
        made it and nothing else is in it; the lock is released."""
        self.clear()
        checkpoints = self.path / CHECKPOINTS
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()
        self.release()
        if self.created and sorted(p.name for p in self.path.iterdir()) in ([], [FolderLock.NAME]):
            (self.path / FolderLock.NAME).unlink(missing_ok=True)
            self.path.rmdir()

    def disk_bytes(self) -> int:
        """What the run folder holds, in bytes (the lock and files still being written aside)."""
        return sum(f.stat().st_size for f in self.path.rglob("*")
                   if f.is_file() and f.name != FolderLock.NAME and not f.name.endswith(PART))

    # -- records ------------------------------------------------------------------------------
    def write_config(self, config: Dict) -> None:
        write_json(self.config_path, config)

    def read_config(self) -> Dict:
        """config.json in this version's shape (``migrate``)."""
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
        """The records of metrics.jsonl, in order. A line this package did not write whole (cut
        short by a crash, bytes that are not UTF-8, a number field that holds something else)
        is left out, and said once in ``metrics_problems``: plots and resume go on without it."""
        if not self.metrics_path.exists():
            return []
        records, self.metrics_problems = [], []
        try:
            text = self.metrics_path.read_bytes().decode("utf-8", errors="replace")
        except OSError as error:
            raise storage_error(error, self.metrics_path, "reading") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            why = _not_a_record(record)
            if why:
                self.metrics_problems.append(f"{self.metrics_path}: line {number} left out ({why})")
            else:
                records.append(record)
        return records

    def truncate_metrics_after(self, step: int) -> List[str]:
        """On resume: drop records written after the checkpoint's step, so nothing is counted
        twice (and lines that are not records: returned, one line each, for the user)."""
        kept = [r for r in self.read_metrics() if (r.get("step") or 0) <= step]
        def write(tmp):
            with open(tmp, "w") as handle:
                for r in kept:
                    handle.write(json.dumps(r, default=json_default) + "\n")
        write_atomically(self.metrics_path, write)
        return self.metrics_problems


#: The fields of a metrics record that hold numbers (or null), whatever its kind.
NUMBER_FIELDS = ("epoch", "step", "images", "loss", "error", "lr", "images_per_second", "train_loss", "train_error",
                 "val_loss", "val_top1_error", "val_top5_error", "ten_crop_top1_error", "ten_crop_top5_error")


def _not_a_record(record) -> str:
    """Why a decoded line is not a metrics record this package wrote, or "" when it is one."""
    if not isinstance(record, dict):
        return "not a JSON object: cut short, or not written by alexnet"
    for name in NUMBER_FIELDS:
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"its {name} is {value!r}, not a number"
    if "\ufffd" in json.dumps(record, ensure_ascii=False):
        return "bytes that are not UTF-8"
    return ""


#: The first bytes of every checkpoint file torch writes (a zip archive).
ZIP_MAGIC = b"PK\x03\x04"


def is_checkpoint_file(path: Path) -> bool:
    """A file torch wrote (a zip archive with a ``data.pkl``), from its first bytes and its index:
    enough to tell an alexnet checkpoint from someone's files without unpickling anything."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != ZIP_MAGIC:
                return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


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
    trained, found = list(trained), list(dataset.classes)
    if trained == found or are_ilsvrc_synsets(trained, found):  # an imported net meets ImageNet's folders
        return
    if len(trained) != len(found):
        differ = f"{len(found)}"
    elif sorted(trained) == sorted(found):
        differ = f"the same {len(found)} in another order"
    else:
        first = next(i for i, (a, b) in enumerate(zip(trained, found)) if a != b)
        differ = f"{len(found)} of other names (class {first}: {found[first]!r}, the run's {trained[first]!r})"
    raise CheckpointError(f"{where}: trained on {len(trained)} classes, but {root} has {differ}{hint}")


def check_same_data(config: Mapping, splits: Mapping[str, object], where: Union[str, Path],
                    root: Union[str, Path]) -> None:
    """A resumed run's data is the dataset it trained on, wherever it now is: as many images in
    each split as its configuration recorded (the class names are ``check_classes``')."""
    resolved = config.get("resolved", {})
    for split, dataset in splits.items():
        recorded = resolved.get(f"{split}_images")
        if recorded is not None and recorded != len(dataset):
            raise CheckpointError(f"{where}: trained on {recorded:,} {split} images, but {root} has {len(dataset):,}: "
                                  f"not the dataset it trained on")


def quote(path: Union[str, Path]) -> str:
    """A path as a shell command needs it (a hint the user pastes must work as pasted)."""
    return shlex.quote(str(path))


#: Version 1 of config.json (one flat dict): what set-up resolved stood beside the settings, the
#: preprocessing's divide_std was the recipe's input_divide_std, and fields added since had these
#: values before they existed (nn.Dropout's form until the paper's existed; the first plateau rule).
V1_RESOLVED = ("data_root", "placement", "amp_dtype", "lr_rule", "classes", "train_images", "val_images", "stats",
               "versions", "command", "distributed")
V1_RENAMED = {"input_divide_std": "divide_std"}
V1_BEFORE = {"dropout_style": "inverted", "plateau_min_improvement": 0.0, "min_epochs_per_lr": 1}
#: Version 1's runtime settings (the training session's; ``TrainRuntime`` holds them since) and
#: the run's own fields beside the parts.
V1_RUNTIME = ("devices", "layout", "lrn_impl", "amp", "channels_last", "cudnn_benchmark", "workers", "log_every",
              "skip_bad", "ten_crop", "eval_batch_size", "max_steps", "collective_timeout")
V1_OWN = ("data", "out", "overwrite")


def migrate(data: Mapping, where: str = "config") -> Dict[str, object]:
    """A saved configuration in this version's shape (a copy). Version 1 (no "config_version")
    was one flat dict: the net's and the runtime's fields beside the recipe, which also held
    the initialization, the dropout and the preprocessing, and what set-up resolved."""
    data = dict(data)
    version = data.get("config_version", 1)
    if version == CONFIG_VERSION:
        return data
    if version != 1:
        raise ConfigError(f"{where}: config version {version!r} is not one this alexnet reads (1 or "
                          f"{CONFIG_VERSION}); upgrade alexnet")
    return _from_v1(data, where)


def _take(source: Dict, names, renamed: Optional[Mapping[str, str]] = None) -> Dict[str, object]:
    """The entries of ``source`` that are ``names`` (under their old names too), removed from it."""
    old = {(renamed or {}).get(k, k): k for k in source}
    return {name: source.pop(old[name]) for name in names if name in old}


def _from_v1(data: Dict, where: str) -> Dict[str, object]:
    recipe = dict(data.pop("recipe", {}))
    model = {**{k: v for k, v in V1_BEFORE.items() if k in ModelConfig.names()},
             **_take(recipe, ModelConfig.names()), **_take(data, ModelConfig.names())}
    if isinstance(data.get("classes"), int):  # the class count trained on, resolved from the data
        model["num_classes"] = data["classes"]
    preprocess = _take(recipe, PreprocessConfig.names(), V1_RENAMED)
    recipe = {**{k: v for k, v in V1_BEFORE.items() if k not in ModelConfig.names()}, **recipe}
    runtime = _take(data, V1_RUNTIME)
    own = _take(data, V1_OWN)
    resolved = _take(data, V1_RESOLVED)
    if data:
        raise ConfigError(f"{where}: unknown key {sorted(data)[0]!r} in a version-1 configuration")
    return {"config_version": CONFIG_VERSION, "model": model, "preprocess": preprocess, "recipe": recipe,
            "runtime": runtime, **own, "resolved": resolved}
