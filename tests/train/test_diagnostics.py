"""The stall check: a run whose training loss sits at ln(classes) and whose validation error
cannot be told from guessing at the validation set's size is told so in one line, with what
to try, under --quiet too, and the stall is recorded; a learning run is not flagged. The
decisions are checked against the binomial tail computed exactly in rational arithmetic."""

import json
import math
from fractions import Fraction

import pytest
from click.testing import CliRunner

from alexnet.cli import main
from alexnet.train.diagnostics import STALL_P, chance_tail, stall_check


def exact_tail(correct, images, classes):
    """P(X >= correct), X ~ Binomial(images, 1/classes), as an exact fraction."""
    p = Fraction(1, classes)
    return sum(math.comb(images, k) * p ** k * (1 - p) ** (images - k) for k in range(correct, images + 1))


def record(train_loss, val_error, epoch=3, steps_per_epoch=11):
    return {"epoch": epoch, "step": epoch * steps_per_epoch, "train_loss": train_loss, "val_top1_error": val_error}


def check(rec, val_images=300, classes=10, init="paper", lr=0.01, train_images=1408, batch_size=128):
    return stall_check(rec, classes, val_images, train_images=train_images, batch_size=batch_size, init=init, lr=lr)


@pytest.mark.parametrize("correct,images,classes", [(35, 300, 10), (29, 300, 10), (44, 300, 10), (123, 1000, 10),
                                                    (3, 50, 1000), (0, 10, 10), (300, 300, 10)])
def test_the_tail_is_the_exact_binomial_figure(correct, images, classes):
    assert chance_tail(correct, images, classes) == pytest.approx(float(exact_tail(correct, images, classes)),
                                                                  rel=1e-9, abs=1e-300)


def test_the_issue_case_is_flagged_against_the_exact_figure():
    """1,408 training images, 300 validation images, 10 classes, batch 128: after 3 epochs the
    training loss is 2.71 and the error 88.3% (35 right). Guessing gets 35 or more right with
    probability 0.19: that is chance."""
    assert float(exact_tail(35, 300, 10)) > STALL_P
    stall = check(record(2.71, 0.883))
    assert stall is not None
    assert stall["val_correct"] == 35 and stall["val_images"] == 300
    assert stall["p_value"] == pytest.approx(float(exact_tail(35, 300, 10)), rel=1e-9)
    assert stall["steps_per_epoch"] == 11 and stall["few_steps"]
    line = stall["message"]
    assert line.startswith("epoch 3: still at chance after 33 steps (training loss 2.710, ln 10 = 2.303; "
                           "validation error 88.3% on 300 images, chance 90.0%: P = 0.19")
    assert "1,408 images give 11 steps an epoch at batch 128" in line and "--batch-size" in line
    assert "--init authors" in line and "\n" not in line


def test_the_decision_turns_where_the_exact_tail_crosses_the_threshold():
    """The largest count still at chance, found from the exact tail, is flagged; one more right
    is learning. The old rule (within a point of chance) called 86% error learning."""
    images = 300
    first_learning = next(k for k in range(images + 1) if exact_tail(k, images, 10) <= STALL_P)
    assert check(record(2.5, 1 - (first_learning - 1) / images)) is not None
    assert check(record(2.5, 1 - first_learning / images)) is None


def test_a_learning_run_is_not_flagged():
    # the error well below chance: 60% error on 300 images is 120 right, P ~ 1e-36
    assert float(exact_tail(120, 300, 10)) < 1e-30
    assert check(record(2.4, 0.60)) is None
    # the training loss has fallen below ln 10 although the error has not moved yet
    assert check(record(2.0, 0.9)) is None
    # 1,000 classes at 99.9% error on 50,000 images (50 right, chance's own count): at chance
    assert check(record(6.95, 0.999), val_images=50_000, classes=1000) is not None
    assert check(record(6.95, 0.99), val_images=50_000, classes=1000) is None  # 500 right


def test_what_to_try_follows_the_init_and_the_steps():
    plenty = check(record(2.31, 0.9, steps_per_epoch=500), init="caffe", lr=0.02, train_images=64_000)
    assert not plenty["few_steps"] and plenty["message"].endswith("try a lower --lr than 0.02")
    assert "small for this recipe" not in plenty["message"]


def test_a_run_at_chance_warns_under_quiet_and_records_it(tiny, tmp_path):
    """A run that cannot learn (a learning rate of 1e-9) on the tiny data set, with -q: the one
    warning line is printed, and the stall is in metrics.jsonl and summary.json."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(tiny), "--out", str(out), "-b", "4", "--epochs", "1",
                                       "--lr", "1e-9", "--devices", "cpu", "-j", "0", "-q"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: epoch 1: still at chance after 5 steps")
    assert "20 images give 5 steps an epoch at batch 4" in warnings[0]
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stall = [r for r in epochs if r["kind"] == "epoch"][0]["stall"]
    assert warnings[0] == "warning: " + stall["message"]
    assert stall["val_images"] == 10 and stall["p_value"] == pytest.approx(
        float(exact_tail(stall["val_correct"], 10, 10)), rel=1e-9)
    assert json.loads((out / "summary.json").read_text())["stall"] == stall
