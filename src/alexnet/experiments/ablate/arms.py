"""The arms of the ablation as data: what each changes in a training run, and what the paper
measured when it made the same change.

Every arm is the baseline (the paper's two-tower net) with a few ``TrainConfig`` fields
changed; everything else (data, recipe, schedule, steps, seed, data order, augmentation draws)
is the baseline's. The deltas are the paper's (§3.2-§3.4, FACTS §7): how many percentage
points of top-1 / top-5 error the paper's net gains over the arm, so the arm's error minus the
baseline's is expected to be that much above zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ...errors import ConfigError
from ...model.spec import NetSpec, resolve
from ...train.session import TrainConfig


@dataclass(frozen=True)
class Arm:
    name: str  # the CLI flag (--name) and the run folders' prefix (name-seedK)
    changes: Mapping[str, object]  # TrainConfig fields set for this arm
    paper_delta: Optional[Tuple[float, float]]  # arm minus baseline, top-1 and top-5 error, points
    section: str
    description: str


#: The baseline's network: the TrainConfig fields the arms change, at the paper's values.
PAPER_NET = {"variant": "two-gpu", "lrn": True, "overlap": True}

BASELINE = Arm("baseline", {}, None, "§3.5",
               "the paper's net: two towers, LRN after conv1 and conv2, overlapping 3x3/2 max-pooling")

ARMS: Tuple[Arm, ...] = (
    #   name          TrainConfig changes      paper Δ      §       what the arm is
    Arm("one-gpu",    {"variant": "one-gpu"},  (1.7, 1.2),  "§3.2",
        "the one-GPU net: one column, half the kernels in conv1-conv4, conv5 and the FC layers whole, "
        "on one device"),
    Arm("no-lrn",     {"lrn": False},          (1.4, 1.2),  "§3.3",
        "no local response normalization after conv1 and conv2"),
    Arm("no-overlap", {"overlap": False},      (0.4, 0.3),  "§3.4",
        "non-overlapping 2x2/2 max-pooling instead of 3x3/2, with the same sizes 55-27-13-6"),
)

ARM_NAMES = tuple(arm.name for arm in ARMS)
BY_NAME: Dict[str, Arm] = {arm.name: arm for arm in (BASELINE, *ARMS)}


def get_arms(names: Sequence[str]) -> Tuple[Arm, ...]:
    """The arms named, in the table's order; one line naming the arms for an unknown name."""
    names = list(names)
    unknown = [n for n in names if n not in ARM_NAMES]
    if unknown:
        raise ConfigError(f"unknown arm {unknown[0]!r}; the arms are {', '.join(ARM_NAMES)}")
    if not names:
        raise ConfigError(f"no arm chosen; the arms are {', '.join(ARM_NAMES)}")
    return tuple(arm for arm in ARMS if arm.name in names)


def run_name(arm: Arm, seed: int) -> str:
    return f"{arm.name}-seed{seed}"


def net_spec(changes: Mapping[str, object], num_classes: int = 1000) -> NetSpec:
    """The network of the paper's net with ``changes`` (TrainConfig fields: variant, lrn, overlap)."""
    net = {**PAPER_NET, **{k: v for k, v in changes.items() if k in PAPER_NET}}
    return resolve(num_classes=num_classes, **net)


def arm_spec(arm: Arm, num_classes: int = 1000) -> NetSpec:
    """The network the arm trains."""
    return net_spec(arm.changes, num_classes)


def arm_config(template: TrainConfig, arm: Arm, seed: int, run_dir: Path) -> TrainConfig:
    """The training run of ``arm`` with ``seed``: the template with the arm's changes, the seed
    (initialization, data order, augmentation, dropout all follow it), and its own folder."""
    config = dataclasses.replace(template, recipe=template.recipe.replace(seed=seed), out=str(run_dir),
                                 overwrite=False, **arm.changes)
    if resolve(variant=config.variant).towers == 1:
        # The paper compares the two-GPU net on two GPUs with the one-GPU net on one.
        config = dataclasses.replace(config, devices=config.devices.first_device())
    return config
