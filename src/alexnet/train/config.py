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
``alexnet.run_folder.migrate`` turns what older versions wrote into this shape.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

from ..data.preprocess import PreprocessConfig
from ..errors import ConfigError
from ..model.config import ModelConfig
from ..run_folder import CONFIG_VERSION, migrate
from ..runtime import Runtime
from . import distributed
from .recipe import Recipe, get_preset

@dataclass(frozen=True)
class TrainRuntime(Runtime):
    """How a training session runs: the runtime every command shares (``alexnet.runtime``), and
    how it reports, when it stops and whether it ends with the ten-crop evaluation. None of it
    changes what the net learns; a resumed session brings its own."""

    log_every: int = 10  # steps between progress records (and host synchronisations)
    skip_bad: bool = False
    ten_crop: bool = True  # a final ten-crop evaluation after the last epoch
    eval_batch_size: Optional[int] = None
    max_steps: Optional[int] = None  # stop as if interrupted after this many steps in total
    collective_timeout: float = distributed.DEFAULT_TIMEOUT  # seconds; several processes only
    parallel: str = "data"  # issue 30: how several processes share the net (distributed.PARALLEL)

    def checks(self):
        return [
            *super().checks(),
            (self.log_every >= 1, f"--log-every must be at least 1; got {self.log_every}"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1; got {self.max_steps}"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"--eval-batch-size must be at least 1; got {self.eval_batch_size}"),
            (isinstance(self.collective_timeout, (int, float)) and math.isfinite(self.collective_timeout)
             and self.collective_timeout >= 1,
             f"--collective-timeout must be a finite number of seconds, at least 1; got {self.collective_timeout}"),
            (self.parallel in distributed.PARALLEL,
             f"--parallel must be one of {', '.join(distributed.PARALLEL)}; got {self.parallel!r}"),
        ]


#: The parts of a TrainConfig, by field name, and the Settings class of each.
PARTS = {"model": ModelConfig, "preprocess": PreprocessConfig, "recipe": Recipe, "runtime": TrainRuntime}
#: What a run is: its net, its preprocessing and its recipe. The runtime is how one session runs
#: it, and may change from one session to the next; the ablation's arms change these parts.
RUN_PARTS = ("model", "preprocess", "recipe")
RUN_SETTINGS = frozenset(name for part in RUN_PARTS for name in PARTS[part].names())
#: What a resumed run may change besides its runtime: more epochs, and where its data now is.
RESUME_MAY_CHANGE = ("epochs", "data")
#: What a run started with ``init_from`` takes from that checkpoint: its net, but for the class
#: count (the data's) and the initialization (which draws a fresh fc8 where the count differs).
NET_FROM_CHECKPOINT = tuple(name for name in ModelConfig.names() if name not in ("num_classes", "init"))
#: The options spelled otherwise than the settings they set (torchvision's --wd; the plateau
#: rule's two); every other option is --<setting> with "-" for "_".
OPTION_NAMES = {"weight_decay": "wd", "plateau_patience": "patience", "plateau_min_improvement": "min_improvement"}


def option(setting: str) -> str:
    """A setting as the command line spells it: ``option("weight_decay")`` is ``--wd``."""
    return "--" + OPTION_NAMES.get(setting, setting).replace("_", "-")


def options(settings) -> str:
    return ", ".join(option(name) for name in settings)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs (see the module's docstring); the run folder records it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    recipe: Recipe = field(default_factory=lambda: get_preset("paper").recipe)
    data: Optional[str] = None  # a folder or packed dataset; None: the built-in dataset
    runtime: TrainRuntime = field(default_factory=TrainRuntime)
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
        part whole, by the part's name: ``replace(runtime=TrainRuntime(devices="cpu"))``.
        A run that starts from a checkpoint (``init_from``) trains that checkpoint's net: a
        change to the net's settings beside it is one line."""
        starting = changes.get("init_from", self.recipe.init_from)
        net = [name for name in NET_FROM_CHECKPOINT if name in changes]
        if starting is not None and net:
            raise ConfigError(f"--init-from trains the checkpoint's own net; drop {options(net)}")
        return self._replace(**changes)

    def _replace(self, **changes) -> "TrainConfig":
        parts = {}
        for part, kind in PARTS.items():
            whole = changes.pop(part, getattr(self, part))  # a part given whole: replace(runtime=TrainRuntime(...))
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

    def resumed(self, **changes) -> "TrainConfig":
        """This run's next session: ``changes`` may set its runtime (devices, workers, ...),
        more ``epochs``, and its ``data`` where the dataset moved (set-up checks that it is the
        same one); anything else is what the run is, and is one line. The last session's
        ``max_steps`` stopped that session only."""
        fixed = sorted(set(changes) & (RUN_SETTINGS - set(RESUME_MAY_CHANGE)))
        if fixed:
            raise ConfigError(f"--resume continues the run's own recipe and net; drop {options(fixed)} (only "
                              f"{options(RESUME_MAY_CHANGE)} for a dataset that moved, and how it runs may change)")
        return self._replace(max_steps=None, overwrite=False).replace(**changes)

    def differences(self, other: "TrainConfig", ignore=()) -> Dict[str, tuple]:
        """What the two runs are set to differently (their net, preprocessing and recipe), by
        setting: (this run's value, the other's)."""
        return {name: (getattr(getattr(self, part), name), getattr(getattr(other, part), name))
                for part in RUN_PARTS for name in PARTS[part].names()
                if name not in ignore and getattr(getattr(self, part), name) != getattr(getattr(other, part), name)}
