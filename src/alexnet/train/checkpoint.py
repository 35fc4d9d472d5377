"""Checkpoints: one layout-independent file per save, read without unpickling arbitrary objects.

A checkpoint holds the canonical state dict (the grouped net's names and shapes, whatever
layout trained it), the net's ``ModelConfig`` and the ``PreprocessConfig`` it was trained
with, the optimizer's momentum buffers under the same canonical names, the schedule, the
position in training, every random state, the run's configuration, the class names and the
dataset statistics, all as tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it. It is written to a temporary file and renamed.

Everything that reads a checkpoint rebuilds the net from its ModelConfig and the input from
its PreprocessConfig and statistics (``model_from_checkpoint``, ``preprocess_from_checkpoint``).
Version 1 checkpoints (before both were stored whole) are brought to this shape when read, by
``_migrate_v1`` alone.
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

from ..data.preprocess import Preprocess, PreprocessConfig
from ..data.stats import DatasetStats
from ..devices import AUTO, DeviceRequest, Placement
from ..errors import CheckpointError
from ..files import write_atomically
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.spec import resolve
from .config import V1_BEFORE, migrate
from .run_folder import RunFolder

FORMAT = "alexnet-checkpoint"
VERSION = 2
#: What every checkpoint holds, whatever its version, and of what type.
REQUIRED = {"model_config": dict, "model": dict, "classes": list}


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


def save_checkpoint(path: Union[str, Path], *, model: nn.Module, classes: Sequence[str],
                    preprocess: PreprocessConfig = PreprocessConfig(), stats: Optional[Dict[str, torch.Tensor]] = None,
                    config: Optional[Dict] = None, optimizer: Optional[torch.optim.Optimizer] = None,
                    schedule: Optional[Dict] = None, progress: Optional[Dict] = None, rng: Optional[Dict] = None,
                    metrics: Optional[Dict] = None) -> Path:
    """``model``'s weights and ModelConfig with everything else named; ``config`` is the run's
    config.json, ``optimizer`` None leaves out the momentum buffers (weights only)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.spec.config.as_dict(),
        "preprocess": preprocess.as_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "stats": stats or {},
        "config": json.dumps(config or {}),
        "optimizer": None if optimizer is None else {"momentum": momentum_buffers(model, optimizer)},
        "schedule": schedule or {},
        "progress": progress or {},
        "rng": rng or {},
        "metrics": metrics or {},
    }
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


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
        if foreign is None:
            raise CheckpointError(f"{path}: not a readable alexnet checkpoint ({_first_line(error)})") from None
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
    payload["path"] = str(path)
    payload["config"] = migrate(json.loads(payload.get("config") or "{}"), f"{path}: its config")
    if version < 2:
        _migrate_v1(payload)
    return payload


def _migrate_v1(payload: Dict) -> None:
    """Version 1 stored only the net's shape-defining settings (and, later, its dropout form:
    a checkpoint without it trained with nn.Dropout's inverted form) and left the
    initialization and the preprocessing to the run's recipe."""
    config = payload["config"]
    model = {**{k: v for k, v in V1_BEFORE.items() if k in ModelConfig.names()},
             "init": config["model"].get("init", ModelConfig().init), **payload["model_config"]}
    payload.update(version=VERSION, model_config=model, preprocess=config["preprocess"])


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def saved_model(payload: Dict) -> ModelConfig:
    """The net a checkpoint holds; a setting this version does not know is one line naming it."""
    return ModelConfig.from_dict(payload["model_config"], payload["path"])


def saved_preprocess(payload: Dict) -> PreprocessConfig:
    """The preprocessing the checkpoint's net was trained with."""
    return PreprocessConfig.from_dict(payload.get("preprocess") or {}, payload["path"])


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
    """Fine-tuning: ``payload``'s weights into ``model`` (the same net), but fc8 where the class
    counts differ, which keeps the model's own (freshly drawn) one."""
    state = model.state_dict()
    weights = {key: value for key, value in payload["model"].items()
               if not (key.startswith("fc8.") and key in state and tuple(value.shape) != tuple(state[key].shape))}
    same_classes = {**payload["model_config"], "num_classes": model.spec.config.num_classes}
    load_weights(model, {**payload, "model_config": same_classes, "model": {**state, **weights}})


def load_model(checkpoint_or_run_dir: Union[str, Path], layout: str = "grouped",
               devices: Optional[Sequence] = None, lrn_impl: str = "fast") -> nn.Module:
    """A trained model, in eval mode, on any layout and devices.

    The returned module also carries ``.classes`` (the class names, in label order) and
    ``.checkpoint`` (the checkpoint's metadata: configuration, statistics, progress, metrics).
    """
    return model_from_checkpoint(read_checkpoint(checkpoint_or_run_dir), layout, devices, lrn_impl)


def model_from_checkpoint(payload: Dict, layout: str = "grouped", devices: Optional[Sequence] = None,
                          lrn_impl: str = "fast") -> nn.Module:
    """``load_model`` for a checkpoint already read with ``read_checkpoint``."""
    model = build_model(saved_model(payload), layout=layout, devices=devices, initialize=False, lrn_impl=lrn_impl)
    load_weights(model, payload)
    model.eval()
    model.classes = list(payload["classes"])
    model.checkpoint = {k: v for k, v in payload.items() if k not in ("model", "optimizer")}
    return model


def checkpoint_placement(payload: Dict, devices=AUTO) -> Placement:
    """Where to run a checkpoint's net: ``devices`` (a DeviceRequest, a --devices string or a
    device list) resolved for the checkpoint's variant."""
    return DeviceRequest.of(devices).resolve(towers=resolve(saved_model(payload)).towers)


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


def preprocess_from_checkpoint(payload: Dict, device, channels_last: bool = False) -> Preprocess:
    """The input as the checkpoint's run trained with it: its statistics on ``device`` and its
    PreprocessConfig."""
    return Preprocess(stats_from_checkpoint(payload).to(device), saved_preprocess(payload), channels_last)
