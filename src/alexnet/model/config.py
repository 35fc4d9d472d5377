"""``ModelConfig``: every setting that decides which network is built, in one frozen dataclass.

    ModelConfig()                                  # the paper's net (§3.5), 1000 classes
    ModelConfig(variant="one-gpu")                 # the one-GPU comparison net of §3.2
    ModelConfig(lrn=False, num_classes=10)         # an ablation, on a 10-class dataset
    config.replace(dropout_style="inverted")       # a changed copy, checked

``build_model(config)`` builds it in any layout, a checkpoint stores ``config.as_dict()`` and
everything that reads a checkpoint rebuilds the net with ``ModelConfig.from_dict``. A new model
setting is a new field here (with its check in ``_checks``) and the code that uses it.
How and where the net runs (layout, devices, LRN implementation, precision) is not part of it:
those never change the function the net computes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Mapping

from ..errors import ConfigError
from .dropout import DROPOUT_STYLES
from .init import INIT_PRESETS

VARIANTS = ("two-gpu", "one-gpu")


@dataclass(frozen=True)
class ModelConfig:
    """Which AlexNet: the architecture and the options that change what it computes.

    variant:  "two-gpu" (the paper's net, §3.5) or "one-gpu" (the single-column comparison
              net of §3.2: 48-128-192-192-256 kernels, FC 4096-4096-num_classes).
    lrn, overlap: the ablations of §3.3 and §3.4 (LRN off; 2x2/2 pooling instead of 3x3/2).
    num_classes: fc8's outputs (training takes it from the data).
    dropout:  the probability of zeroing a unit of fc6 and fc7 while training (§4.2: 0.5).
    dropout_style: "paper": no scaling while training, outputs times 1-dropout at test (§4.2);
              "inverted": kept units times 1/(1-dropout) while training, nothing at test
              (nn.Dropout, Caffe).
    init:     the initialization preset the net starts from (``alexnet.model.init``).
    """

    variant: str = "two-gpu"
    lrn: bool = True
    overlap: bool = True
    num_classes: int = 1000
    dropout: float = 0.5
    dropout_style: str = "paper"
    init: str = "paper"

    def __post_init__(self):
        for ok, message in _checks(self):
            if not ok:
                raise ConfigError(message)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` (field names), checked; an unknown name is one line naming it."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "model configuration") -> "ModelConfig":
        """The configuration as ``as_dict`` wrote it; a key this version does not know is one
        line naming it and ``where`` it was found (a checkpoint, a run's config.json)."""
        _reject_unknown(data, f"{where}: ")
        return cls(**data)


def field_names():
    """The settings, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(ModelConfig))


def _reject_unknown(keys, where: str = "") -> None:
    unknown = sorted(set(keys) - set(field_names()))
    if unknown:
        raise ConfigError(f"{where}unknown model setting {unknown[0]!r}; the settings are {', '.join(field_names())}")


def _checks(c: ModelConfig):
    """(ok, the one line that says what is wrong) for every setting, named as the options are."""
    return [
        (c.variant in VARIANTS, f"--variant must be one of {', '.join(VARIANTS)}; got {c.variant!r}"),
        (isinstance(c.lrn, bool), f"lrn must be True or False; got {c.lrn!r}"),
        (isinstance(c.overlap, bool), f"overlap must be True or False; got {c.overlap!r}"),
        (isinstance(c.num_classes, int) and not isinstance(c.num_classes, bool) and c.num_classes >= 1,
         f"--num-classes must be a positive integer; got {c.num_classes!r}"),
        (isinstance(c.dropout, (int, float)) and 0.0 <= float(c.dropout) < 1.0,
         f"--dropout must be in [0, 1); got {c.dropout!r}"),
        (c.dropout_style in DROPOUT_STYLES,
         f"--dropout-style must be one of {', '.join(DROPOUT_STYLES)}; got {c.dropout_style!r}"),
        (c.init in INIT_PRESETS, f"--init must be one of {', '.join(INIT_PRESETS)}; got {c.init!r}"),
    ]
