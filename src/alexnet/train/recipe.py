"""Training recipes as data: the paper's (§5), Caffe's, and a short one for the built-in dataset.

A recipe is a plain dataclass; the CLI overrides it field by field, and the run folder records
the fully resolved one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..data.preprocess import PreprocessConfig
from ..errors import ConfigError
from ..model.config import ModelConfig
from ..model.spec import LAYERS
from ..settings import Settings

SCHEDULES = ("plateau", "step", "epochs")
#: How often the FC layers update under --parallel hybrid (alexnet.train.hybrid): "batch", once per
#: global batch (what one process does); "rank", after each rank's images in turn, K times per step
#: (cuda-convnet2's updatePeriod=1, Krizhevsky 2014).
FC_UPDATES = ("batch", "rank")
LAYER_NAMES = tuple(layer.name for layer in LAYERS)


#: Seeds go to torch's 64-bit generators, as the seed itself and plus one (the augmentation's).
MAX_SEED = 2 ** 63 - 1


@dataclass(frozen=True)
class Recipe(Settings):
    """How a net is trained: the optimizer, the batch, the schedule and the seed. The net it
    trains (its initialization and dropout form included) is a ModelConfig, the input's
    preprocessing a PreprocessConfig; a preset names all three (``PRESETS``)."""

    what = "recipe field"

    name: str
    description: str = ""
    # §5: SGD, batch 128, momentum 0.9, weight decay 5e-4 (not on biases, as in the authors' code)
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_biases: bool = False
    # The biases' rate is bias_lr_mult times the weights'; anneal_biases=False keeps it at
    # bias_lr_mult times the initial lr for the whole run (the authors' epsB 0.02, never reduced).
    bias_lr_mult: float = 1.0
    anneal_biases: bool = True
    # §5: "divide the learning rate by 10 when the validation error rate stopped improving with
    # the current learning rate"; "reduced three times prior to termination", in about 90
    # epochs. "step" divides every `step_epochs` instead. See LRSchedule and schedule_rule.
    schedule: str = "plateau"
    lr_drop_factor: float = 0.1
    max_lr_drops: int = 3
    # plateau only. A new best must beat the best top-1 validation error at the current rate
    # by plateau_min_improvement (absolute, as a fraction: 0.001 is 0.1 points, 50 of ImageNet's
    # 50,000 validation images); plateau_patience epochs without one divide the rate, but not
    # before min_epochs_per_lr epochs at that rate.
    plateau_patience: int = 5
    plateau_min_improvement: float = 0.001
    min_epochs_per_lr: int = 10
    step_epochs: int = 20
    # epochs: divide after each of these epochs (the authors' hand-set drops).
    lr_drop_epochs: Tuple[int, ...] = ()
    # Per-layer learning rates: (after epoch e, target, m; e = 0: from the start): from then on the target learns at
    # m times its scheduled rate; a target is a layer's weights ("conv1") or its biases
    # ("conv1.bias"). The authors' conv1: weights 0.1 after 66, weights and biases 0 after 71.
    layer_lr: Tuple[Tuple[int, str, float], ...] = ()
    # The colour (PCA) noise is switched off after this epoch (None: never; the authors: 66).
    colour_noise_epochs: Optional[int] = None
    # The run length the epochs above are written for: a run of ``epochs`` epochs places each
    # at the same fraction of its length (``at``). None: as written.
    schedule_epochs: Optional[int] = None
    # Start from this checkpoint's weights (its net; fc8 drawn afresh when the class count
    # differs): fine-tuning. None: from the initialization.
    init_from: Optional[str] = None
    # Seeds the initialization, the data order, the augmentation and the dropout masks.
    seed: int = 0
    # --parallel hybrid only (issue 30, docs/distributed.md): the FC layers' updates per step
    # (FC_UPDATES), and the conv layers' rates times the number of processes K, as cuda-convnet2's
    # layer-params-imagenet-4gpu-data-model.cfg has them (conv epsW 0.04, FC 0.01 at K = 4).
    fc_updates: str = "batch"
    scale_conv_lr: bool = False

    def __post_init__(self):
        # JSON gives lists: the epoch lists and the layer rules are kept as tuples.
        object.__setattr__(self, "lr_drop_epochs", tuple(self.lr_drop_epochs))
        object.__setattr__(self, "layer_lr", tuple(tuple(rule) for rule in self.layer_lr))
        super().__post_init__()

    def at(self, epoch: int) -> int:
        """Where an epoch number of the schedule (``lr_drop_epochs``, ``layer_lr``,
        ``colour_noise_epochs``) falls in a run of ``epochs`` epochs: as written, or scaled in
        proportion from ``schedule_epochs`` (rounded half up, at least 1)."""
        if self.schedule_epochs is None or epoch == 0:
            return epoch
        return max(1, math.floor(epoch * self.epochs / self.schedule_epochs + 0.5))

    def layer_lr_mults(self, epochs_done: int) -> Dict[str, float]:
        """Each target's multiplier of its rate once ``epochs_done`` epochs have run."""
        mults: Dict[str, float] = {}
        for epoch, layer, mult in sorted(self.layer_lr, key=lambda rule: rule[0]):
            if self.at(epoch) <= epochs_done:
                mults[layer] = float(mult)
        return mults

    def colour_noise(self, epochs_done: int) -> bool:
        """Whether the colour noise is on in the epoch after ``epochs_done`` epochs."""
        return self.colour_noise_epochs is None or epochs_done < self.at(self.colour_noise_epochs)

    def checks(self):
        """One clear line for an impossible value, naming the option."""
        floats = {"--lr": self.lr, "--momentum": self.momentum, "--wd": self.weight_decay,
                  "--lr-drop-factor": self.lr_drop_factor, "--min-improvement": self.plateau_min_improvement,
                  "bias_lr_mult": self.bias_lr_mult}
        return [(math.isfinite(value), f"{name} must be a finite number; got {value}") for name, value in floats.items()] + [
            (self.epochs >= 1, f"--epochs must be at least 1; got {self.epochs}"),
            # torch's generators take 64 bits, and the augmentation's stream is seeded with seed + 1.
            (isinstance(self.seed, int) and 0 <= self.seed < MAX_SEED,
             f"--seed must be between 0 and {MAX_SEED - 1} (2^63 - 2); got {self.seed}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1; got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive; got {self.lr}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}"),
            (self.weight_decay >= 0, f"--wd must be non-negative; got {self.weight_decay}"),
            (self.schedule in SCHEDULES,
             f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}"),
            (0 < self.lr_drop_factor < 1, f"--lr-drop-factor must be in (0, 1); got {self.lr_drop_factor}"),
            (self.max_lr_drops >= 0, f"--max-lr-drops must be non-negative; got {self.max_lr_drops}"),
            (self.plateau_patience >= 1, f"--patience must be at least 1; got {self.plateau_patience}"),
            (0 <= self.plateau_min_improvement < 1,
             f"--min-improvement must be in [0, 1) (top-1 error as a fraction: 0.001 is 0.1 points); "
             f"got {self.plateau_min_improvement}"),
            (self.min_epochs_per_lr >= 1, f"--min-epochs-per-lr must be at least 1; got {self.min_epochs_per_lr}"),
            (self.step_epochs >= 1, f"--step-epochs must be at least 1; got {self.step_epochs}"),
            (self.bias_lr_mult > 0, f"bias_lr_mult must be positive; got {self.bias_lr_mult}"),
            (isinstance(self.anneal_biases, bool), f"anneal_biases must be True or False; got {self.anneal_biases!r}"),
            (all(isinstance(e, int) and e >= 1 for e in self.lr_drop_epochs)
             and list(self.lr_drop_epochs) == sorted(set(self.lr_drop_epochs)),
             f"--lr-drop-epochs must be increasing epoch numbers, each at least 1; got {list(self.lr_drop_epochs)}"),
            (self.schedule != "epochs" or bool(self.lr_drop_epochs),
             "--schedule epochs needs the epochs to divide after (--lr-drop-epochs 25,51,79)"),
            (self.schedule_epochs is None or self.schedule_epochs >= 1,
             f"schedule_epochs must be at least 1; got {self.schedule_epochs}"),
            (self.colour_noise_epochs is None or self.colour_noise_epochs >= 1,
             f"colour_noise_epochs must be at least 1; got {self.colour_noise_epochs}"),
            (self.fc_updates in FC_UPDATES, f"--fc-updates must be one of {', '.join(FC_UPDATES)}; got {self.fc_updates!r}"),
            (isinstance(self.scale_conv_lr, bool), f"scale_conv_lr must be True or False; got {self.scale_conv_lr!r}"),
        ] + [_layer_rule_check(rule) for rule in self.layer_lr]


def _layer_rule_check(rule) -> Tuple[bool, str]:
    ok = (len(rule) == 3 and isinstance(rule[0], int) and rule[0] >= 0 and isinstance(rule[1], str)
          and rule[1].removesuffix(".bias") in LAYER_NAMES
          and isinstance(rule[2], (int, float)) and math.isfinite(rule[2]) and rule[2] >= 0)
    return ok, (f"layer_lr rules are (after epoch >= 0, a layer of {', '.join(LAYER_NAMES)} or its biases as "
                f"conv1.bias, a multiplier >= 0); got {list(rule)}")



@dataclass(frozen=True)
class Preset:
    """A named way to train: its recipe, the net it trains (initialization, dropout form) and
    how it preprocesses the input."""

    recipe: Recipe
    model: ModelConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def name(self) -> str:
        return self.recipe.name


PAPER = Preset(Recipe(
    name="paper",
    description="§5 of the paper: batch 128, lr 0.01 divided by 10 when validation error stops improving "
                "(three times), momentum 0.9, weight decay 5e-4, 90 epochs, paper initialization, "
                "the paper's dropout (outputs halved at test time)",
), ModelConfig(init="paper", dropout_style="paper"))

CAFFE = Preset(Recipe(
    name="caffe",
    description="Caffe's bvlc_alexnet solver: batch 256, lr 0.01 divided by 10 every 20 epochs "
                "(100,000 iterations), 90 epochs, biases at twice the learning rate, Caffe initialization",
    batch_size=256,
    schedule="step",
    step_epochs=20,
    max_lr_drops=4,
    bias_lr_mult=2.0,
    # Caffe's dropout layer scales the kept units by 1/(1-p) in training.
), ModelConfig(init="caffe", dropout_style="inverted"))

# The built-in dataset's short schedule: a few minutes on a 2-core CPU (docs/training.md). The
# paper's recipe and net with one departure that makes it train in so short a run: the authors'
# own initialization (conv3-5 N(0, 0.03), layers-145.cfg), where the paper's words (N(0, 0.01)
# everywhere) stay at chance (docs/trainability.md); --init paper selects the paper's.
BUILTIN = Preset(Recipe(
    name="builtin",
    description="the paper's recipe with a short schedule for the built-in dataset, a few minutes on a "
                "2-core CPU: batch 32, 5 epochs, lr 0.01 for 3 then 0.001 for 2, the authors' initialization "
                "(conv3-5 N(0, 0.03)), the paper's dropout",
    # 5 epochs, 2 of them at the lower rate (3 epochs, 1 at 0.001, until 2026-12-02): the
    # longer run's result moves less between seeds (docs/training.md, seed-spread.json).
    epochs=5,
    batch_size=32,
    schedule="step",
    step_epochs=3,
    max_lr_drops=1,
    # With the authors' init the paper's dropout trains as well as the inverted form did with
    # Caffe's init, seed for seed (docs/training.md, docs/figures/seed-spread.json).
), ModelConfig(init="authors", dropout_style="paper"))

# What the authors ran for the paper's single CNN (layers-145.cfg, layer-params-145.cfg; FACTS
# §6b): the paper's §5 with the hand-set schedule they logged, on their own blocks and init.
# Every number is layer-params-145.cfg's (the ILSVRC-2012 run, 40.66 / 18.21); their other runs
# differ: the ILSVRC-2010 run behind Table 1 (layer-params-145-2010.cfg) drops after 23, 51, 78,
# changes conv1 at 68 and 72, stops at 93 and ends with the biases at 0.002; net 147's file has
# 23, 51, 79 and 0.002 too (docs/faithfulness.md, "The authors' runs, file by file").
# cuda-convnet counts epochs from 1: the log's "epoch 25: set epsw to 0.001" was set while the
# 25th pass ran, after 24 completed epochs, and "epoch 91: killed" ends the run after 90. The
# numbers below are the log's, minus one: epochs completed when each change took effect.
AUTHORS = Preset(Recipe(
    name="authors",
    description="the authors' 2012 configuration (layers-145.cfg): their blocks (conv1's LRN before its ReLU, "
                "cnorm2) and init (conv3-5 N(0, 0.03)); lr 0.01 divided by 10 from the log's epochs 25, 51 and "
                "79 (after 24, 50 and 78 of 90), biases at a fixed 0.02, conv1 at a tenth of the rate from 67 and "
                "frozen from 72, colour noise off from 67; the centre window of the mean image; crop and flip "
                "drawn per 32 images. With --epochs N every epoch number scales by N/90",
    epochs=90,
    schedule="epochs",
    lr_drop_epochs=(24, 50, 78),
    bias_lr_mult=2.0,
    anneal_biases=False,
    # The log sets conv1's epsW; the released params file ends with conv1's epsB at 0 too, so
    # its biases stop with its weights.
    layer_lr=((66, "conv1", 0.1), (71, "conv1", 0.0), (71, "conv1.bias", 0.0)),
    colour_noise_epochs=66,
    schedule_epochs=90,
), ModelConfig(blocks="authors", init="authors", dropout_style="paper", no_overlap_as="authors"),
    PreprocessConfig(mean="centre", crop_chunk=32))

# Fine-tuning a trained net (--init-from), as Caffe's fine-tuning example did it
# (examples/finetune_flickr_style, the convention of the Caffe-era transfer papers): base lr
# 0.001, biases at twice the weights' rate and without decay, the new fc8 at 10x (its biases
# 20x), divided by 10 every fifth of the run (stepsize 20,000 of max_iter 100,000).
FINETUNE = Preset(Recipe(
    name="finetune",
    description="fine-tuning from --init-from: lr 0.001 divided by 10 every 4 of 20 epochs, biases at 2x the rate "
                "and without decay, fc8 (new when the class count differs) at 10x; the net is the checkpoint's",
    epochs=20,
    batch_size=64,
    lr=0.001,
    bias_lr_mult=2.0,
    schedule="step",
    step_epochs=4,
    max_lr_drops=4,
    layer_lr=((0, "fc8", 10.0), (0, "fc8.bias", 10.0)),
), ModelConfig(init="caffe", dropout_style="inverted"))

PRESETS: Dict[str, Preset] = {p.name: p for p in (PAPER, CAFFE, BUILTIN, AUTHORS, FINETUNE)}


def default_preset(data) -> str:
    """The preset a run gets when none is named: the authors' recipe on a dataset of one's own
    (the most faithful setting that trains: docs/trainability.md), the built-in recipe on the
    built-in data."""
    return "authors" if data else "builtin"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}; got {name!r}") from None



def schedule_rule(recipe: Recipe) -> str:
    """The learning-rate rule of ``recipe`` in one line of words, for the run's config and the
    start-up message."""
    r = recipe
    start = f"lr {r.lr:g}"
    if r.max_lr_drops == 0:
        return f"{start}, never divided"
    divide = f"divided by {1 / r.lr_drop_factor:.3g}"
    times = "at most once" if r.max_lr_drops == 1 else f"at most {r.max_lr_drops} times"
    if r.schedule == "step":
        return f"{start}, {divide} every {_epochs(r.step_epochs)}, {times}"
    if r.schedule == "epochs":
        written = ", ".join(str(e) for e in r.lr_drop_epochs[:r.max_lr_drops])
        here = ", ".join(str(r.at(e)) for e in r.lr_drop_epochs[:r.max_lr_drops])
        scaled = f" of {r.schedule_epochs} (here {here} of {r.epochs})" if r.schedule_epochs not in (None, r.epochs) else ""
        return f"{start}, {divide} after epochs {written}{scaled}"
    if r.plateau_min_improvement > 0:
        better = f"by at least {100 * r.plateau_min_improvement:g} points"
    else:
        better = "(a tie does not count)"
    return (f"{start}, {divide} when top-1 validation error has not beaten the best at the current rate "
            f"{better} for {_epochs(r.plateau_patience)}, after at least {_epochs(r.min_epochs_per_lr)} "
            f"at each rate; {times}")


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


#: Absorbs float rounding when an improvement is exactly the threshold (errors are counts over
#: a validation set, so real differences are far larger: 2e-5 is one of 50,000 images).
_EPS = 1e-9


class LRSchedule:
    """The learning-rate schedule of a recipe, with its state saved in checkpoints.

    plateau (§5: divide by 10 "when the validation error rate stopped improving with the current
    learning rate"): after each epoch's validation, a top-1 error that beats the best at the
    current rate by at least ``plateau_min_improvement`` is a new best and restarts the count (a
    tie, or a smaller gain, does not). The rate is divided after ``plateau_patience`` epochs
    without a new best, but not before ``min_epochs_per_lr`` epochs at the current rate, and at
    most ``max_lr_drops`` times; the best then starts afresh at the new rate.
    step: divide every ``step_epochs`` epochs, at most ``max_lr_drops`` times.
    epochs: divide after each of ``lr_drop_epochs`` (placed by ``Recipe.at``).
    The biases' fixed rate and the per-layer multipliers are applied by ``optim.set_lr``.
    """

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.lr = recipe.lr
        self.drops = 0
        self.best_error = math.inf  # the best validation error at the current rate
        self.epochs_since_best = 0
        self.epochs_at_lr = 0

    def after_epoch(self, epoch: int, val_error: float) -> bool:
        """Update after epoch ``epoch`` (0-based) finished; True if the rate was divided."""
        r = self.recipe
        self.epochs_at_lr += 1
        gain = self.best_error - val_error  # nan (never a gain) when the error is nan
        if gain > 0 and gain >= r.plateau_min_improvement - _EPS:
            self.best_error, self.epochs_since_best = val_error, 0
        else:
            self.epochs_since_best += 1
        if self.drops >= r.max_lr_drops:
            return False
        if r.schedule == "plateau":
            drop = int(self.epochs_since_best >= r.plateau_patience and self.epochs_at_lr >= r.min_epochs_per_lr)
        elif r.schedule == "step":
            drop = int((epoch + 1) % r.step_epochs == 0)
        else:  # epochs: scaled to a shorter run, two drops may fall after the same epoch
            due = sum(r.at(e) == epoch + 1 for e in r.lr_drop_epochs[:r.max_lr_drops])
            drop = min(due, r.max_lr_drops - self.drops)
        if drop:
            self.lr *= r.lr_drop_factor ** drop
            self.drops += drop
            self.best_error, self.epochs_since_best, self.epochs_at_lr = math.inf, 0, 0
        return drop > 0

    def state_dict(self) -> Dict:
        return {"lr": self.lr, "drops": self.drops, "best_error": self.best_error,
                "epochs_since_best": self.epochs_since_best, "epochs_at_lr": self.epochs_at_lr}

    def load_state_dict(self, state: Dict) -> None:
        self.lr = float(state["lr"])
        self.drops = int(state["drops"])
        self.best_error = float(state["best_error"])
        self.epochs_since_best = int(state["epochs_since_best"])
        # Saved before epochs_at_lr existed: at least the epochs since the best were at this rate.
        self.epochs_at_lr = int(state.get("epochs_at_lr", self.epochs_since_best))
