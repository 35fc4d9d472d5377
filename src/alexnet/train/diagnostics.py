"""A run that is not learning, said as soon as it shows: ``stall_check`` decides from an epoch's
record whether the net is still at chance (the binomial tail of its validation count and its
training loss against ln(classes)). Why a net stalls at initialization is measured by
``alexnet.analysis.activations.activation_stats`` (docs/trainability.md).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

#: "At chance" means a validation top-1 count at least this likely under guessing: the
#: one-sided binomial tail P(X >= correct), X ~ Binomial(validation images, 1/classes), above
#: STALL_P. At 10 classes, 300 images: up to 43 right (85.7% error) is still chance; 1,000: 123.
STALL_P = 0.01
#: ... together with a training loss that has not fallen below this fraction of ln(classes).
STALL_LOSS = 0.98
#: Fewer steps an epoch than this: the training set is small for the recipe's batch (the
#: paper's ImageNet epoch is 10,009 steps of 128; the built-in recipe's is 78 of 32).
FEW_STEPS = 100


def chance_tail(correct: int, images: int, classes: int) -> float:
    """P(X >= correct) for X ~ Binomial(images, 1/classes): how likely a net that guesses gets
    at least ``correct`` of ``images`` right. Summed in log space, exact to float rounding."""
    if correct <= 0:
        return 1.0
    if correct > images:
        return 0.0
    p = 1.0 / classes
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [math.lgamma(images + 1) - math.lgamma(k + 1) - math.lgamma(images - k + 1) + k * log_p
            + (images - k) * log_q for k in range(correct, images + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def stall_check(record: Dict, classes: int, val_images: int, *, train_images: int, batch_size: int,
                init: str, lr: float) -> Optional[Dict]:
    """The stall of an epoch record (``alexnet.train.loop.end_epoch``), or None when the run is
    learning. Still at chance: the training loss has not fallen below ln(classes) (within
    STALL_LOSS) and the validation error cannot be told from guessing at the validation set's
    size (the binomial tail above STALL_P). The result, recorded in metrics.jsonl and
    summary.json, holds the figures and the one line to print, with what to try. The paper's
    initialization at its learning rate stalls like this on small data sets
    (docs/trainability.md), and so does any recipe given too few steps."""
    chance_loss = math.log(classes)
    correct = round((1 - record["val_top1_error"]) * val_images)
    p_value = chance_tail(correct, val_images, classes)
    if record["train_loss"] < STALL_LOSS * chance_loss or p_value <= STALL_P:
        return None
    steps_per_epoch = record["step"] // max(record["epoch"], 1)
    advice = ("try the authors' initialization, --init authors (conv3-5 std 0.03), or a lower --lr such as "
              "0.001; see docs/trainability.md") if init == "paper" else f"try a lower --lr than {lr:g}"
    few = steps_per_epoch < FEW_STEPS
    if few:
        advice = (f"the training set is small for this recipe: {train_images:,} images give {steps_per_epoch} "
                  f"steps an epoch at batch {batch_size} (ImageNet gives the paper 10,009); try a smaller "
                  f"--batch-size such as 32 and more --epochs; or " + advice)
    message = (f"epoch {record['epoch']}: still at chance after {record['step']:,} steps (training loss "
               f"{record['train_loss']:.3f}, ln {classes} = {chance_loss:.3f}; validation error "
               f"{100 * record['val_top1_error']:.1f}% on {val_images:,} images, chance "
               f"{100 * (1 - 1 / classes):.1f}%: P = {p_value:.2g} that guessing does as well): the run is not "
               f"learning; " + advice)
    return {"epoch": record["epoch"], "steps": record["step"], "train_loss": record["train_loss"],
            "chance_loss": chance_loss, "val_top1_error": record["val_top1_error"], "val_images": val_images,
            "val_correct": correct, "p_value": p_value, "steps_per_epoch": steps_per_epoch, "few_steps": few,
            "message": message}
