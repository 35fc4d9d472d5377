"""The learning-rate schedule against §5: "divide the learning rate by 10 when the validation error
rate stopped improving with the current learning rate", three times in about 90 epochs."""

import io
import math
import random

import pytest
import torch

from alexnet.errors import ConfigError
from alexnet.train.config import TrainConfig
from alexnet.train.recipe import LRSchedule, Recipe, get_preset, schedule_rule

PAPER = get_preset("paper").recipe
# The rule before this one: any strict improvement resets, one epoch without one divides.
FIRST_RULE = PAPER.replace(plateau_patience=1, plateau_min_improvement=0.0, min_epochs_per_lr=1)

# What each division of the rate buys once the error has settled at the previous rate (top-1,
# as a fraction): a large step after the first, a small one after the second, little after
# the third, as in the paper's kind of curve.
GAINS = (0.07, 0.015, 0.003)


def paper_shaped_run(recipe, seed, epochs=90, noise=0.002):
    """Train a make-believe net for ``epochs`` under ``recipe``'s schedule.

    At the first rate the top-1 error falls fast from 84% and flattens towards 44%; after each
    division it falls by GAINS[k] within a few epochs and flattens again. Each epoch's error is
    that curve plus N(0, 0.2 points) of noise, rounded to a 10,000-image validation set, and
    about one epoch in six repeats the previous epoch's error exactly (a tie). Returns the
    epochs (1-based) after which the rate was divided, the noise-free curve and the errors.
    """
    rng = random.Random(seed)
    schedule = LRSchedule(recipe)
    drops, clean, errors = [], [], []
    level, at_level, settled, repeated = 0, 0, None, False
    for epoch in range(epochs):
        at_level += 1
        if level == 0:
            value = 0.44 + 0.50 * math.exp(-at_level / 3) + 0.05 * math.exp(-at_level / 15)
        else:
            value = settled - GAINS[level - 1] * (1 - math.exp(-at_level / 2.5))
        error = round(value + rng.gauss(0, noise), 4)
        repeated = bool(errors) and not repeated and rng.random() < 1 / 6
        if repeated:
            error = errors[-1]
        clean.append(value)
        errors.append(error)
        if schedule.after_epoch(epoch, error):
            drops.append(epoch + 1)
            settled, level, at_level = value, level + 1, 0
    return drops, clean, errors


@pytest.mark.parametrize("seed", range(50))
def test_the_papers_rule_divides_three_times_on_plateaus_over_90_epochs(seed):
    drops, clean, errors = paper_shaped_run(PAPER, seed)
    assert any(a == b for a, b in zip(errors, errors[1:]))  # the curve has ties
    assert len(drops) == 3, drops
    assert drops[0] >= 15, drops  # not while the error is still falling fast
    assert drops[-1] <= 85, drops  # the last rate still gets some epochs
    # Each rate runs at least min_epochs_per_lr epochs.
    assert all(b - a >= PAPER.min_epochs_per_lr for a, b in zip([0] + drops, drops)), drops
    # A division comes only once the rate has stopped paying: the noise-free error fell by
    # less than a point over the patience window before it.
    for epoch in drops:
        window = clean[epoch - 1 - PAPER.plateau_patience:epoch]
        assert window[0] - window[-1] < 0.01, (drops, epoch)


def test_the_first_rule_spent_its_three_divisions_in_the_first_epochs():
    """The old rule (patience 1, ties and any gain counted) on the same curves: the three
    divisions come while the error is still falling, long before the new rule's first."""
    firsts = [paper_shaped_run(FIRST_RULE, seed)[0] for seed in range(50)]
    news = [paper_shaped_run(PAPER, seed)[0] for seed in range(50)]
    assert sorted(d[0] for d in firsts)[25] <= 10  # median first division by epoch 10
    assert sum(old[2] < new[0] for old, new in zip(firsts, news)) >= 40
    # And its hand-made case: divided after epochs 3, 5 and 7.
    schedule = LRSchedule(FIRST_RULE)
    errors = [0.9, 0.8, 0.8, 0.7, 0.75, 0.6, 0.6, 0.6, 0.6, 0.6]
    drops = [e + 1 for e, err in enumerate(errors) if schedule.after_epoch(e, err)]
    assert drops == [3, 5, 7] and schedule.lr == pytest.approx(1e-5)


def _drops(recipe, errors):
    schedule = LRSchedule(recipe)
    return [e + 1 for e, err in enumerate(errors) if schedule.after_epoch(e, err)], schedule


def test_a_flat_curve_divides_after_min_epochs_per_lr_at_each_rate():
    drops, schedule = _drops(PAPER, [0.5] * 90)
    assert drops == [10, 20, 30]  # then max_lr_drops is spent
    assert schedule.lr == pytest.approx(1e-5) and schedule.drops == 3


def test_a_tie_is_not_an_improvement():
    rule = PAPER.replace(plateau_patience=2, plateau_min_improvement=0.0, min_epochs_per_lr=1)
    assert _drops(rule, [0.5, 0.5, 0.5])[0] == [3]
    assert _drops(rule, [0.5, 0.5, 0.4999])[0] == []  # without a threshold any gain counts
    assert _drops(PAPER.replace(min_epochs_per_lr=1), [0.5] + [0.5] * 5)[0] == [6]


def test_a_gain_below_the_threshold_neither_resets_the_patience_nor_moves_the_best():
    rule = PAPER.replace(plateau_patience=3, min_epochs_per_lr=1)  # threshold 0.001 (0.1 points)
    drops, schedule = _drops(rule, [0.5, 0.4995, 0.4992])
    assert drops == [] and schedule.best_error == 0.5 and schedule.epochs_since_best == 2
    assert _drops(rule, [0.5, 0.4995, 0.4992, 0.4991])[0] == [4]
    # Small gains that add up to the threshold against the best do count.
    assert _drops(rule, [0.5, 0.4995, 0.4992, 0.4990, 0.4989])[0] == []
    # Exactly the threshold counts, even where float subtraction lands a hair below it.
    assert 0.344 - 0.343 < 0.001
    drops, schedule = _drops(rule, [0.344, 0.343])
    assert schedule.best_error == 0.343 and schedule.epochs_since_best == 0


def test_the_best_starts_afresh_at_each_rate():
    rule = PAPER.replace(plateau_patience=2, min_epochs_per_lr=2)
    # 0.40 is the best at the first rate; after the drop 0.45, worse, is the best at the new one.
    drops, schedule = _drops(rule, [0.40, 0.41, 0.41, 0.45])
    assert drops == [3] and schedule.best_error == 0.45 and schedule.epochs_at_lr == 1


def test_a_nan_error_is_never_an_improvement():
    assert _drops(PAPER.replace(min_epochs_per_lr=1), [0.5] + [math.nan] * 5)[0] == [6]


def _through_a_checkpoint(state):
    buffer = io.BytesIO()
    torch.save({"schedule": state}, buffer)  # as save_checkpoint stores it
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["schedule"]


@pytest.mark.parametrize("seed", [0, 7])
def test_resuming_from_a_saved_state_mid_run_makes_the_same_decisions(seed):
    whole, _, errors = paper_shaped_run(PAPER, seed)
    reference = LRSchedule(PAPER)
    decisions = [reference.after_epoch(e, err) for e, err in enumerate(errors)]
    assert [e + 1 for e, d in enumerate(decisions) if d] == whole
    for cut in range(1, len(errors)):
        first = LRSchedule(PAPER)
        before = [first.after_epoch(e, err) for e, err in enumerate(errors[:cut])]
        resumed = LRSchedule(PAPER)
        resumed.load_state_dict(_through_a_checkpoint(first.state_dict()))
        after = [resumed.after_epoch(e, err) for e, err in enumerate(errors[cut:], start=cut)]
        assert before + after == decisions, cut
        assert resumed.state_dict() == reference.state_dict()


def test_a_state_saved_before_the_new_keys_loads():
    old = {"lr": 0.001, "drops": 1, "best_error": 0.45, "epochs_since_best": 2}
    schedule = LRSchedule(PAPER)
    schedule.load_state_dict(_through_a_checkpoint(old))
    assert (schedule.lr, schedule.drops, schedule.best_error, schedule.epochs_since_best) == (0.001, 1, 0.45, 2)
    assert schedule.epochs_at_lr == 2  # at least the epochs since its best were at this rate
    assert set(schedule.state_dict()) == {"lr", "drops", "best_error", "epochs_since_best", "epochs_at_lr"}
    # It goes on with the rule: patience is met after 3 more epochs, ten epochs at this rate after 8.
    drops = [e for e in range(20, 40) if schedule.after_epoch(e, 0.46)]
    assert drops == [27, 37]  # and ten epochs later at the next rate


def test_the_step_schedule_is_unchanged():
    for name, expected in (("caffe", [20, 40, 60, 80]), ("builtin", [3])):
        recipe = get_preset(name).recipe
        drops, schedule = _drops(recipe, [0.5 - 0.001 * e for e in range(recipe.epochs)])
        assert drops == expected, name
        other = LRSchedule(recipe)
        other.load_state_dict(schedule.state_dict())
        assert other.state_dict() == schedule.state_dict()


def test_the_rule_in_one_line():
    assert schedule_rule(PAPER) == (
        "lr 0.01, divided by 10 when top-1 validation error has not beaten the best at the current rate "
        "by at least 0.1 points for 5 epochs, after at least 10 epochs at each rate; at most 3 times")
    assert schedule_rule(get_preset("caffe").recipe) == "lr 0.01, divided by 10 every 20 epochs, at most 4 times"
    assert schedule_rule(get_preset("builtin").recipe) == "lr 0.01, divided by 10 every 3 epochs, at most once"
    assert "(a tie does not count) for 1 epoch, after at least 1 epoch" in schedule_rule(FIRST_RULE)
    assert schedule_rule(PAPER.replace(max_lr_drops=0)) == "lr 0.01, never divided"
    assert all("\n" not in schedule_rule(get_preset(n).recipe) for n in ("paper", "caffe", "builtin"))


@pytest.mark.parametrize("field,value,message", [
    ("plateau_patience", 0, "--patience must be at least 1; got 0"),
    ("plateau_min_improvement", -0.001, r"--min-improvement must be in \[0, 1\)"),
    ("plateau_min_improvement", 1.0, r"--min-improvement must be in \[0, 1\)"),
    ("min_epochs_per_lr", 0, "--min-epochs-per-lr must be at least 1; got 0"),
    ("dropout_style", "bad", "--dropout-style must be one of paper, inverted; got 'bad'"),
])
def test_impossible_schedule_values_are_named_in_one_line(field, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig.from_preset("paper").replace(**{field: value})
    assert "\n" not in str(info.value)


def test_a_recorded_recipe_without_the_new_fields_keeps_what_trained_it():
    # A version-1 config.json: one flat dict, written before the dropout style and the
    # plateau rule's two thresholds were recorded; those runs trained with nn.Dropout's form
    # and a drop allowed after any epoch on any strict improvement.
    recipe = {k: v for k, v in PAPER.as_dict().items() if k not in ("plateau_min_improvement", "min_epochs_per_lr")}
    recorded = {"recipe": {**recipe, "init": "paper", "dropout": 0.5}, "data": None, "variant": "two-gpu",
                "lrn": True, "overlap": True, "devices": "cpu", "layout": None, "amp": "auto", "classes": 10}
    old = TrainConfig.from_dict(recorded, "config.json")
    assert (old.model.dropout_style, old.recipe.plateau_min_improvement, old.recipe.min_epochs_per_lr) == (
        "inverted", 0.0, 1)
    assert (old.model.num_classes, str(old.runtime.devices)) == (10, "cpu")
    assert Recipe.from_dict(PAPER.as_dict()) == PAPER
    with pytest.raises(ConfigError, match="unknown recipe field 'learning_rate'"):
        Recipe.from_dict({**PAPER.as_dict(), "learning_rate": 0.1})
