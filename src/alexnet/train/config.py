"""A training run's configuration, in one shape:

    TrainConfig
      model       ModelConfig       which net (alexnet.model.config)
      preprocess  PreprocessConfig  how a batch becomes its input (alexnet.data.preprocess)
      recipe      Recipe            how it is trained (alexnet.train.recipe)
      data        the dataset: a folder or packed dataset, or None for the built-in one
      runtime     Runtime           how this session runs: devices, precision, workers, ...
      out, overwrite                the run folder

    config = TrainConfig.from_preset("builtin", lr=0.001, lrn=False, devices="cpu")
    config.replace(seed=3)          # any field of any part, by its name

The first four say what the run is; ``runtime`` says how a session of it runs and is replaced as
a whole on resume. A run folder's config.json holds ``as_dict()`` (and what set-up resolved,
under "resolved"); ``from_dict`` reads it back and one clear line names a key it does not know;
``migrate`` turns what older versions wrote into this shape.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

from ..data.preprocess import PreprocessConfig
from ..devices import AUTO, DeviceRequest
from ..errors import ConfigError
from ..model.config import ModelConfig
from ..model.lrn import LRN_IMPLS
from ..precision import AMP_CHOICES
from ..settings import Settings
from . import distributed
from .recipe import Recipe, get_preset

#: More data-loading processes than this is a typing mistake, not a speed-up: each holds a
#: copy of the dataset's index and competes for the same cores.
MAX_WORKERS = max(8, 4 * (os.cpu_count() or 1))

#: config.json's layout: 2 since the parts are nested (1: one flat dict, see ``migrate``).
CONFIG_VERSION = 2


@dataclass(frozen=True)
class Runtime(Settings):
    """How a session runs: where, in what precision and memory format, how it reads data and
    reports, when it stops and whether it ends with the ten-crop evaluation. None of it changes
    what the net learns; a resumed session brings its own."""

    what = "runtime setting"

    devices: DeviceRequest = AUTO  # --devices and --layout
    lrn_impl: str = "fast"
    amp: str = "auto"  # auto: bf16 on GPUs that support it, fp32 elsewhere
    channels_last: bool = False
    cudnn_benchmark: bool = True
    workers: Optional[int] = None
    log_every: int = 10  # steps between progress records (and host synchronisations)
    skip_bad: bool = False
    ten_crop: bool = True  # a final ten-crop evaluation after the last epoch
    eval_batch_size: Optional[int] = None
    max_steps: Optional[int] = None  # stop as if interrupted after this many steps in total
    collective_timeout: float = distributed.DEFAULT_TIMEOUT  # seconds; several processes only

    def __post_init__(self):
        object.__setattr__(self, "devices", DeviceRequest.of(self.devices))
        super().__post_init__()

    def checks(self):
        return [
            (self.lrn_impl in LRN_IMPLS, f"--lrn-impl must be one of {', '.join(LRN_IMPLS)}; got {self.lrn_impl!r}"),
            (self.amp in AMP_CHOICES, f"--amp must be one of {', '.join(AMP_CHOICES)}; got {self.amp!r}"),
            (self.log_every >= 1, f"--log-every must be at least 1; got {self.log_every}"),
            (self.workers is None or 0 <= self.workers <= MAX_WORKERS,
             f"--workers must be between 0 and {MAX_WORKERS} (4 per core); got {self.workers}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1; got {self.max_steps}"),
        ]

    def as_dict(self) -> Dict[str, object]:
        """``--devices`` and ``--layout`` as the user spelled them."""
        return {**super().as_dict(), **self.devices.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "") -> "Runtime":
        data = dict(data)
        devices = DeviceRequest.parse(data.pop("devices", "auto"), data.pop("layout", None))
        cls.reject_unknown(data, f"{where}: " if where else "")
        return cls(devices=devices, **data)


#: The parts of a TrainConfig, by field name, and the Settings class of each.
PARTS = {"model": ModelConfig, "preprocess": PreprocessConfig, "recipe": Recipe, "runtime": Runtime}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs (see the module's docstring); the run folder records it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    recipe: Recipe = field(default_factory=lambda: get_preset("paper").recipe)
    data: Optional[str] = None  # a folder or packed dataset; None: the built-in dataset
    runtime: Runtime = field(default_factory=Runtime)
    out: Optional[str] = None  # the run folder; None: runs/<preset>-<time>
    overwrite: bool = False

    @classmethod
    def from_preset(cls, name: str, **changes) -> "TrainConfig":
        """Preset ``name``'s recipe, net and preprocessing, with ``changes`` (see ``replace``)."""
        preset = get_preset(name)
        return cls(model=preset.model, preprocess=preset.preprocess, recipe=preset.recipe).replace(**changes)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` to any field of any part, each by its own name (the parts'
        names do not overlap): ``replace(lr=0.001, lrn=False, devices="cpu", out="runs/x")``; or a
        part whole, by the part's name: ``replace(runtime=Runtime(devices="cpu"))``."""
        parts = {}
        for part, kind in PARTS.items():
            whole = changes.pop(part, getattr(self, part))  # a part given whole: replace(runtime=Runtime(...))
            if not isinstance(whole, kind):
                raise ConfigError(f"{part} must be a {kind.__name__}; got {type(whole).__name__}")
            mine = {k: changes.pop(k) for k in list(changes) if k in kind.names()}
            parts[part] = whole.replace(**mine) if mine else whole
        own = {f.name for f in dataclasses.fields(self)} - set(PARTS)
        unknown = sorted(set(changes) - own)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}: not a field of the net, the preprocessing, the "
                              f"recipe, the runtime or the run ({', '.join(sorted(own))})")
        return dataclasses.replace(self, **parts, **changes)

    def as_dict(self) -> Dict[str, object]:
        """config.json's configuration: the parts as dicts, the version first."""
        return {"config_version": CONFIG_VERSION,
                **{f.name: (getattr(self, f.name).as_dict() if f.name in PARTS else getattr(self, f.name))
                   for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "config") -> "TrainConfig":
        """A configuration as ``as_dict`` wrote it (older versions migrated first); besides
        the config's own keys it may hold "resolved", what set-up worked out. One clear line
        for a key this version does not know."""
        data = migrate(data, where)
        known = {f.name for f in dataclasses.fields(cls)} | {"config_version", "resolved"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (this version reads {', '.join(sorted(known))})")
        values = {k: v for k, v in data.items() if k in known - {"config_version", "resolved"}}
        for part, kind in PARTS.items():
            if part in values:
                values[part] = kind.from_dict(values[part], f"{where}: {part}")
        return cls(**values)


#: Version 1 of config.json (one flat dict): what set-up resolved stood beside the settings, the
#: preprocessing's divide_std was the recipe's input_divide_std, and fields added since had these
#: values before they existed (nn.Dropout's form until the paper's existed; the first plateau rule).
V1_RESOLVED = ("data_root", "placement", "amp_dtype", "lr_rule", "classes", "train_images", "val_images", "stats",
               "versions", "command", "distributed")
V1_RENAMED = {"input_divide_std": "divide_std"}
V1_BEFORE = {"dropout_style": "inverted", "plateau_min_improvement": 0.0, "min_epochs_per_lr": 1}


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
    recipe = {**{k: v for k, v in V1_BEFORE.items() if k in Recipe.names()}, **recipe}
    runtime = {**_take(data, Runtime.names()), **_take(data, ("layout",))}
    own = _take(data, [f.name for f in dataclasses.fields(TrainConfig) if f.name not in PARTS])
    resolved = _take(data, V1_RESOLVED)
    if data:
        raise ConfigError(f"{where}: unknown key {sorted(data)[0]!r} in a version-1 configuration")
    return {"config_version": CONFIG_VERSION, "model": model, "preprocess": preprocess, "recipe": recipe,
            "runtime": runtime, **own, "resolved": resolved}
