"""The stall warning: a run whose loss sits at ln(classes) with chance-level validation error
is told so in one line, with what to try; a learning run is not."""

import math

from alexnet.train.diagnostics import stall_warning


def record(train_loss, val_error, epoch=1):
    return {"epoch": epoch, "train_loss": train_loss, "val_top1_error": val_error}


def test_a_run_at_chance_is_told_what_to_try():
    line = stall_warning(record(math.log(10) + 0.001, 0.9), classes=10, init="paper", lr=0.01)
    assert line.startswith("epoch 1: still at chance (training loss 2.304, ln 10 = 2.303; validation error 90.0%)")
    assert "--init authors" in line and "--lr" in line and "\n" not in line
    other = stall_warning(record(math.log(1000), 0.999), classes=1000, init="caffe", lr=0.02)
    assert other.endswith("try a lower --lr than 0.02")


def test_a_learning_run_is_left_alone():
    assert stall_warning(record(2.0, 0.9), classes=10, init="paper", lr=0.01) is None  # the loss moved
    assert stall_warning(record(2.3, 0.7), classes=10, init="paper", lr=0.01) is None  # the error moved
    assert stall_warning(record(6.5, 0.999), classes=1000, init="paper", lr=0.01) is None
