"""Checkpoints: one layout-independent file per save, read without unpickling arbitrary objects.

A checkpoint holds the canonical state dict (the grouped net's names and shapes, whatever
layout trained it), the net's ``ModelConfig`` and the ``PreprocessConfig`` it was trained
with, the optimizer's momentum buffers under the same canonical names, the schedule, the
position in training, every random state, the rest of the run's configuration, the class
names and the dataset statistics, all as tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it. It is written to a temporary file and renamed.

Each setting is stored once: the net and its preprocessing at the top level, the run's other
settings in ``config``. ``read_checkpoint`` checks the contents as a whole (the class names
against fc8, the statistics' shapes, every weight finite) and returns every version in this
version's shape, the run's configuration whole (``config["model"]`` and ``config["preprocess"]``
filled in from the top level); ``_migrate_v1`` and ``_migrate_v2`` are the only code that knows
older versions. ``alexnet.trained.open_trained`` turns a checkpoint into a net that runs.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from .data.images import IMAGE_SIZE
from .data.preprocess import PreprocessConfig
from .data.stats import DatasetStats
from .errors import CheckpointError, ConfigError
from .files import save_torch
from .model.config import ModelConfig
from .run_folder import V1_BEFORE, RunFolder, migrate

FORMAT = "alexnet-checkpoint"
#: 3 since each setting is stored once (2 kept the net and the preprocessing in ``config`` too).
VERSION = 3
#: What every checkpoint holds, whatever its version, and of what type.
REQUIRED = {"model_config": dict, "model": dict, "classes": list}
#: The parts of the run's configuration stored at the top level, not in ``config``.
TOP_LEVEL = {"model": "model_config", "preprocess": "preprocess"}
#: The dataset statistics a checkpoint holds, and their shapes.
STATS_SHAPES = {"mean_image": (3, IMAGE_SIZE, IMAGE_SIZE), "channel_mean": (3,), "covariance": (3, 3),
                "eigenvalues": (3,), "eigenvectors": (3, 3)}


def momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, torch.Tensor]:
    """The SGD momentum buffers under canonical parameter names, on the CPU."""
    by_param = {}
    for name, param in model.named_parameters():
        buf = optimizer.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            by_param[name] = buf
    return {k: v.detach().cpu() for k, v in model.to_canonical(by_param).items()}


def load_momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer,
                          buffers: Dict[str, torch.Tensor]) -> None:
    local = model.from_canonical(buffers)
    params = dict(model.named_parameters())
    for name, value in local.items():
        if name not in params:
            raise CheckpointError(f"checkpoint momentum for {name!r} has no parameter in this model")
        param = params[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"checkpoint momentum for {name!r} has shape {tuple(value.shape)}, "
                                  f"the model's parameter {tuple(param.shape)}")
        optimizer.state[param]["momentum_buffer"] = value.to(param.device, param.dtype).clone()


def checkpoint_payload(*, model: nn.Module, classes: Sequence[str], preprocess: PreprocessConfig = PreprocessConfig(),
                       stats: Optional[Dict[str, torch.Tensor]] = None, config: Optional[Dict] = None,
                       optimizer: Optional[torch.optim.Optimizer] = None, schedule: Optional[Dict] = None,
                       progress: Optional[Dict] = None, rng: Optional[Dict] = None,
                       metrics: Optional[Dict] = None) -> Dict:
    """What a checkpoint file holds: ``model``'s weights and ModelConfig with everything else
    named; ``config`` is the run's config.json (stored without its net and preprocessing, which
    the top level holds), ``optimizer`` None leaves out the momentum buffers (weights only)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.spec.config.as_dict(),
        "preprocess": preprocess.as_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "stats": stats or {},
        "config": json.dumps({k: v for k, v in (config or {}).items() if k not in TOP_LEVEL}),
        "optimizer": None if optimizer is None else {"momentum": momentum_buffers(model, optimizer)},
        "schedule": schedule or {},
        "progress": progress or {},
        "rng": rng or {},
        "metrics": metrics or {},
    }


def save_checkpoint(path: Union[str, Path], **parts) -> Path:
    """``checkpoint_payload(**parts)`` written to ``path`` atomically."""
    payload = checkpoint_payload(**parts)
    return save_torch(path, payload)


def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A checkpoint file, or a run folder: its last checkpoint, or its best one where the last
    was removed (``RunFolder.checkpoint_to_read``)."""
    path = Path(path)
    if path.is_dir():
        return RunFolder(path).checkpoint_to_read()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def read_checkpoint(path: Union[str, Path]) -> Dict:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain containers only), in
    this version's shape."""
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        foreign = re.search(r"GLOBAL (\S+)", str(error))
        if foreign is None:  # torch's advice to load with weights_only=False is not ours to give
            raise CheckpointError(f"{path}: not a readable alexnet checkpoint (it holds more than tensors, numbers "
                                  f"and strings, or is damaged); not loaded, for safety") from None
        # torch's weights_only loader met a Python object; its hint to load unsafely is not ours to give.
        raise CheckpointError(f"{path}: holds objects other than tensors, numbers and strings ({foreign.group(1)}); "
                              f"not loaded, for safety") from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable alexnet checkpoint ({_first_line(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an alexnet checkpoint (no '{FORMAT}' marker)")
    version = payload.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (format version {version!r})")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this "
                              f"package reads ({VERSION}); upgrade alexnet")
    missing = [key for key in REQUIRED if not isinstance(payload.get(key), REQUIRED[key])]
    if missing:
        raise CheckpointError(f"{path}: damaged alexnet checkpoint ({missing[0]!r} is missing or not a "
                              f"{REQUIRED[missing[0]].__name__})")
    return as_read(payload, path)


def as_read(payload: Dict, path: Union[str, Path]) -> Dict:
    """A checkpoint's contents (read from ``path``, or made in memory: an imported Caffe net)
    in this version's shape, checked as a whole."""
    path = Path(path)
    version = payload.get("version", 1)
    payload["path"] = str(path)
    payload["config"] = _config(payload, path)
    if version < 2:
        _migrate_v1(payload)
    if version < 3:
        _migrate_v2(payload)
    payload["config"].update({part: payload[key] for part, key in TOP_LEVEL.items()})
    check_contents(payload)
    return payload


def _config(payload: Dict, path: Path) -> Dict:
    """The run's configuration the checkpoint holds, in this version's shape."""
    try:
        config = json.loads(payload.get("config") or "{}")
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its config is not JSON: "
                              f"{_first_line(error)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its config is not a JSON object)")
    try:
        return migrate(config, f"{path}: its config")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def _migrate_v1(payload: Dict) -> None:
    """Version 1 stored only the net's shape-defining settings (and, later, its dropout form:
    a checkpoint without it trained with nn.Dropout's inverted form) and left the
    initialization and the preprocessing to the run's recipe."""
    config = payload["config"]
    model = {**{k: v for k, v in V1_BEFORE.items() if k in ModelConfig.names()},
             "init": config.get("model", {}).get("init", ModelConfig().init), **payload["model_config"]}
    payload.update(version=2, model_config=model, preprocess=config.get("preprocess", {}))


def _migrate_v2(payload: Dict) -> None:
    """Version 2 stored the net and the preprocessing twice, at the top level and in ``config``;
    the top level is what every reader used."""
    for part in TOP_LEVEL:
        payload["config"].pop(part, None)
    payload["version"] = VERSION


def check_contents(payload: Dict) -> None:
    """The checkpoint's parts agree with each other, or one line naming what is wrong: its net
    and preprocessing are settings this version knows, the weights are finite tensors, the
    class names are strings and as many as fc8's outputs, the statistics have their shapes."""
    path = payload["path"]
    saved_model(payload)
    saved_preprocess(payload)
    for name, value in payload["model"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: damaged alexnet checkpoint ({name} is not a tensor)")
        if value.is_floating_point() and not all_finite(value):
            raise CheckpointError(f"{path}: {name} holds values that are not finite (NaN or infinity): the net "
                                  f"diverged or the file is damaged; not loaded")
    classes = payload["classes"]
    if not all(isinstance(name, str) for name in classes):
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its class names are not all strings)")
    fc8 = payload["model"].get("fc8.weight")
    if fc8 is not None and fc8.dim() == 2 and fc8.shape[0] != len(classes):
        raise CheckpointError(f"{path}: fc8 has {fc8.shape[0]} outputs but the checkpoint names {len(classes)} "
                              f"classes; the file is damaged")
    stats = payload.get("stats") or {}
    if not isinstance(stats, dict):
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its statistics are not a dict)")
    for name, shape in STATS_SHAPES.items():
        value = stats.get(name)
        if stats and (not isinstance(value, torch.Tensor) or tuple(value.shape) != shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: damaged alexnet checkpoint (its statistics' {name} is {got}, not "
                                  f"{shape})")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of a floating-point ``tensor`` is finite, from its smallest and
    largest value: a NaN anywhere makes both NaN, an infinity is one of them. One reduction
    pass; ``isfinite(t).all()`` first writes a flag per value, which made every read of the
    paper's 60 million weights some 0.3 s slower (16 times this)."""
    if tensor.numel() == 0:
        return True
    smallest, largest = torch.aminmax(tensor)
    return bool(torch.isfinite(smallest)) and bool(torch.isfinite(largest))


def _first_line(error: Exception) -> str:
    """The first line of ``error``'s message, whole (a message cut mid-sentence says less)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def saved_model(payload: Dict) -> ModelConfig:
    """The net a checkpoint holds; a setting this version does not know, or a value its rules
    refuse, is one line naming the file (not an option the user never gave)."""
    return _saved(ModelConfig, payload["model_config"], payload["path"], "net")


def saved_preprocess(payload: Dict) -> PreprocessConfig:
    """The preprocessing the checkpoint's net was trained with."""
    return _saved(PreprocessConfig, payload.get("preprocess") or {}, payload["path"], "preprocessing")


def _saved(kind, values, path, what: str):
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its {what} is not a dict)")
    try:
        return kind.from_dict(values, path)
    except (ConfigError, TypeError) as error:
        reason = str(error).replace(f"{path}: ", "").replace("--", "")  # the file is at fault, not an option
        raise CheckpointError(f"{path}: damaged alexnet checkpoint (its {what}: {reason})") from None


def check_compatible(payload: Dict, model: nn.Module, what: str = "the model") -> None:
    """A checkpoint of another net (variant, class count, ablation, dropout): one line saying
    which setting differs. The initialization does not count: loading replaces it."""
    saved, current = saved_model(payload), model.spec.config
    for f in dataclasses.fields(ModelConfig):
        if f.name != "init" and getattr(saved, f.name) != getattr(current, f.name):
            raise CheckpointError(f"{payload['path']}: checkpoint has {f.name}={getattr(saved, f.name)!r} but {what} "
                                  f"has {f.name}={getattr(current, f.name)!r}")


def load_weights(model: nn.Module, payload: Dict) -> None:
    check_compatible(payload, model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointError(f"{payload['path']}: weights do not fit the model ({' '.join(first[1:2]) or first[0]})") from None


def load_start_weights(model: nn.Module, payload: Dict) -> None:
    """Fine-tuning: ``payload``'s weights into ``model`` (the same net), every layer of it; fc8
    may have another class count, and then the model keeps its own (freshly drawn) one. A
    layer the checkpoint lacks is one line: nothing trains from random weights unannounced."""
    state = model.state_dict()
    fresh = {key for key, value in payload["model"].items()
             if key.startswith("fc8.") and key in state and tuple(value.shape) != tuple(state[key].shape)}
    missing = sorted(set(state) - set(payload["model"]))
    if missing:
        raise CheckpointError(f"{payload['path']}: holds no {missing[0]}; --init-from needs every layer of the net "
                              f"(fc8 may have another class count)")
    weights = {key: value for key, value in payload["model"].items() if key not in fresh}
    same_classes = {**payload["model_config"], "num_classes": model.spec.config.num_classes}
    load_weights(model, {**payload, "model_config": same_classes, "model": {**state, **weights}})


def stats_for_checkpoint(stats: DatasetStats) -> Dict:
    """A DatasetStats as a checkpoint holds it: its tensors (on the CPU) and plain numbers;
    ``stats_from_checkpoint`` turns it back."""
    out = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, torch.Tensor):
            out[f.name] = value.detach().cpu()
        elif isinstance(value, (int, float, str)):
            out[f.name] = value
    return out


def stats_from_checkpoint(payload: Dict) -> DatasetStats:
    """The training set's statistics saved in a checkpoint, as a DatasetStats."""
    if not payload.get("stats"):
        raise CheckpointError(f"{payload['path']}: holds no dataset statistics (mean image) to preprocess with")
    return DatasetStats(**payload["stats"])
