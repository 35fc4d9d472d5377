"""The arms of an ablation as data: what each changes in a training run, and, for the paper's
arms, what the paper measured when it made the same change.

An arm is the baseline (the ablation's template run) with a few settings changed, named as
``TrainConfig.replace`` names them: the net's (``{"lrn": False}``), the preprocessing's
(``{"divide_std": True}``) or the recipe's (``{"lr": 0.001}``); everything else (data,
schedule, steps, seed, data order, augmentation draws) is the baseline's. The paper's three
(``PAPER_ARMS``) change the paper's net; any other set is given in Python:

    ablate.run(config, baseline=Arm("builtin", {}, "the built-in recipe"),
               arms=[Arm("paper-dropout", {"dropout_style": "paper"}, "the paper's dropout")], seeds=5)

The paper's deltas (§3.2-§3.4, FACTS §7) are how many percentage points of top-1 / top-5 error
the paper's net gains over the arm, so the arm's error minus the baseline's is expected to be
that much above zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from ...errors import ConfigError
from ...model.config import ModelConfig
from ...model.spec import NetSpec, resolve
from ...train.config import RUN_SETTINGS, TrainConfig


@dataclass(frozen=True)
class Arm:
    name: str  # the run folders' prefix (name-seedK); the CLI flag (--name) of a paper arm
    changes: Mapping[str, object] = field(default_factory=dict)  # settings by name (TrainConfig.replace)
    description: str = ""
    paper_delta: Optional[Tuple[float, float]] = None  # arm minus baseline, top-1 and top-5 error, points
    section: str = ""

    def __post_init__(self):
        TrainConfig().replace(**self.changes)  # an unknown or impossible setting: one line, now
        bad = sorted(name for name in self.changes if name not in RUN_SETTINGS or name == "seed")
        if bad:
            raise ConfigError(f"arm {self.name!r} changes {bad[0]!r}: an arm changes what a run is (the net, the "
                              f"preprocessing, the recipe), not its data, seed, folder or how it runs")

    def as_dict(self) -> Dict[str, object]:
        return {"name": self.name, "changes": dict(self.changes), "description": self.description,
                "paper_delta": list(self.paper_delta) if self.paper_delta else None, "section": self.section}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Arm":
        delta = data.get("paper_delta")
        return cls(data["name"], dict(data.get("changes") or {}), data.get("description", ""),
                   tuple(delta) if delta else None, data.get("section", ""))


BASELINE = Arm("baseline", {}, "the paper's net: two towers, LRN after conv1 and conv2, overlapping 3x3/2 "
                               "max-pooling", None, "§3.5")

PAPER_ARMS: Tuple[Arm, ...] = (
    #   name          changes                  what the arm is                                  paper Δ      §
    Arm("one-gpu",    {"variant": "one-gpu"},
        "the one-GPU net: one column, half the kernels in conv1-conv4, conv5 and the FC layers whole, "
        "on one device",                                                                        (1.7, 1.2),  "§3.2"),
    Arm("no-lrn",     {"lrn": False},          "no local response normalization after conv1 and conv2",
        (1.4, 1.2),  "§3.3"),
    Arm("no-overlap", {"overlap": False},
        "non-overlapping 2x2/2 max-pooling instead of 3x3/2",                                  (0.4, 0.3),  "§3.4"),
)

#: How the no-overlap arm's net is built, by the baseline's ``no_overlap_as`` (ModelConfig).
NO_OVERLAP_AS = {
    "paper": "the paper's reading: the 3x3 net's padding, maps 55-27-13-6",
    "authors": ("the layers of the authors' net 147 (trained with the baseline's recipe): ceil rounding, conv2 "
                "padding 1, conv5 padding 0, maps 55-28-26-13-11-6"),
}
ARM_NAMES = tuple(arm.name for arm in PAPER_ARMS)
#: The settings the paper's arms change: the baseline must hold the paper's values of them.
PAPER_NET_SETTINGS = tuple(dict.fromkeys(k for arm in PAPER_ARMS for k in arm.changes))


def get_arms(arms: Sequence[Union[str, Arm]]) -> Tuple[Arm, ...]:
    """Arms given as themselves or as the names of the paper's arms (in the table's order);
    one line naming the paper's arms for an unknown name."""
    arms = list(arms)
    if not arms:
        raise ConfigError(f"no arm chosen; the arms are {', '.join(ARM_NAMES)}")
    unknown = [a for a in arms if isinstance(a, str) and a not in ARM_NAMES]
    if unknown:
        raise ConfigError(f"unknown arm {unknown[0]!r}; the arms are {', '.join(ARM_NAMES)}")
    named = [arm for arm in PAPER_ARMS if arm.name in arms]
    chosen = named + [a for a in arms if isinstance(a, Arm)]
    names = [a.name for a in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"two arms are named {next(n for n in names if names.count(n) > 1)!r}; each needs its own")
    return tuple(chosen)


def for_template(arms: Sequence[Arm], template: TrainConfig) -> Tuple[Arm, ...]:
    """The arms as ``template`` builds them: the no-overlap arm's description says which
    construction of non-overlapping pooling it trains (``--no-overlap-as``)."""
    construction = NO_OVERLAP_AS[template.model.no_overlap_as]
    return tuple(dataclasses.replace(arm, description=f"{arm.description} ({construction})")
                 if arm.changes.get("overlap") is False and construction not in arm.description else arm
                 for arm in arms)


def check_paper_baseline(template: TrainConfig, arms: Sequence[Arm]) -> None:
    """The paper's arms change the paper's net: the baseline must be that net."""
    if not any(arm.paper_delta for arm in arms):
        return
    paper = ModelConfig()
    differ = {k: getattr(template.model, k) for k in PAPER_NET_SETTINGS if getattr(template.model, k) != getattr(paper, k)}
    if differ:
        raise ConfigError(f"the paper's arms change the paper's net themselves; the baseline must be it "
                          f"({', '.join(f'{k}={getattr(paper, k)!r}' for k in PAPER_NET_SETTINGS)}); got "
                          f"{', '.join(f'{k}={v!r}' for k, v in differ.items())}")


def run_folder_name(arm: Arm, seed: int) -> str:
    return f"{arm.name}-seed{seed}"


def arm_spec(template: TrainConfig, arm: Arm, num_classes: int = 1000) -> NetSpec:
    """The network the arm trains."""
    return resolve(template.replace(**arm.changes).model, num_classes=num_classes)


def arm_config(template: TrainConfig, arm: Arm, seed: int, run_dir: Union[str, Path]) -> TrainConfig:
    """The training run of ``arm`` with ``seed``: the template with the arm's changes, the seed
    (initialization, data order, augmentation, dropout all follow it), and its own folder."""
    config = template.replace(**arm.changes).replace(seed=seed, out=str(run_dir), overwrite=False)
    if resolve(config.model).towers == 1:
        # The paper compares the two-GPU net on two GPUs with the one-GPU net on one.
        config = config.replace(devices=config.runtime.devices.first_device())
    return config
