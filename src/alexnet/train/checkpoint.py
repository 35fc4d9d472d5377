"""Checkpoints: one layout-independent file per save, read without unpickling arbitrary objects.

A checkpoint holds the canonical state dict (the grouped net's names and shapes, whatever
layout trained it), the optimizer's momentum buffers under the same canonical names, the
schedule, the position in training, every random state, the model's configuration, the class
names and the dataset statistics, all as tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it. It is written to a temporary file and renamed.
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

from ..data.stats import DatasetStats
from ..errors import CheckpointError
from ..files import write_atomically
from ..model.build import build_model
from .run_folder import BEST, CHECKPOINTS, LAST

FORMAT = "alexnet-checkpoint"
VERSION = 1
MODEL_KEYS = ("variant", "lrn", "overlap", "num_classes", "dropout", "dropout_style")
#: What trained a checkpoint written before a key was recorded: nn.Dropout's inverted dropout
#: until the paper's form (alexnet.model.dropout) existed, so evaluation scales as training did.
MODEL_KEYS_BEFORE = {"dropout_style": "inverted"}


def model_config(model: nn.Module) -> Dict:
    """What it takes to rebuild ``model`` (any layout) from a checkpoint."""
    return {key: getattr(model.spec.config, key) for key in MODEL_KEYS}


def saved_model_config(payload: Dict) -> Dict:
    """A checkpoint's model configuration, with the keys older checkpoints lack filled in with
    what trained them (``MODEL_KEYS_BEFORE``)."""
    return {**MODEL_KEYS_BEFORE, **payload["model_config"]}


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
                    stats: Optional[Dict[str, torch.Tensor]] = None, config: Optional[Dict] = None,
                    optimizer: Optional[torch.optim.Optimizer] = None, schedule: Optional[Dict] = None,
                    progress: Optional[Dict] = None, rng: Optional[Dict] = None,
                    metrics: Optional[Dict] = None) -> Path:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model_config(model),
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
    was removed (a finished ablation run keeps only ``best.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (LAST, BEST):
            candidate = path / CHECKPOINTS / name
            if candidate.exists():
                return candidate
        raise CheckpointError(f"{path}: a folder without {CHECKPOINTS}/{LAST} or {BEST}; give a checkpoint file "
                              f"or a run folder")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def read_checkpoint(path: Union[str, Path]) -> Dict:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
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
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload['version']} is newer than this "
                              f"package reads ({VERSION}); upgrade alexnet")
    payload["path"] = str(path)
    payload["config"] = json.loads(payload.get("config") or "{}")
    return payload


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_compatible(payload: Dict, model: nn.Module, what: str = "the model") -> None:
    """A checkpoint from another variant, class count or ablation: one line saying which."""
    saved, current = payload["model_config"], model_config(model)
    for key in ("variant", "num_classes", "lrn", "overlap"):
        if saved.get(key) != current.get(key):
            raise CheckpointError(f"{payload['path']}: checkpoint has {key}={saved.get(key)!r} but {what} "
                                  f"has {key}={current.get(key)!r}")


def load_weights(model: nn.Module, payload: Dict) -> None:
    check_compatible(payload, model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointError(f"{payload['path']}: weights do not fit the model ({' '.join(first[1:2]) or first[0]})") from None


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
    config = saved_model_config(payload)
    model = build_model(layout=layout, devices=devices, initialize=False, lrn_impl=lrn_impl,
                        **{k: config[k] for k in MODEL_KEYS})
    load_weights(model, payload)
    model.eval()
    model.classes = list(payload["classes"])
    model.checkpoint = {k: v for k, v in payload.items() if k not in ("model", "optimizer")}
    return model


def stats_for_checkpoint(stats) -> Dict:
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


def stats_from_checkpoint(payload: Dict):
    """The training set's statistics saved in a checkpoint, as a DatasetStats."""
    if not payload.get("stats"):
        raise CheckpointError(f"{payload['path']}: holds no dataset statistics (mean image) to preprocess with")
    return DatasetStats(**payload["stats"])
