"""One process of tests/test_hybrid.py (or a one-process reference, in the test's process): the
real set-up and training loop for a few steps, then the canonical parameters, the counted
collectives, the inputs each step trained on and the progress saved for the test to compare.

    python tests/hybrid_worker.py DATA OUT_DIR BATCH STEPS RESULT.pt [SETTING=VALUE ...]

SETTING=VALUE: any TrainConfig setting (parallel=hybrid, fc_updates=rank, dropout=0.5, ...), read
as JSON where it parses; and the worker's own: float64=true (the net and its inputs in float64,
to tell rounding from a different computation), evaluate=true (validation after the steps, as
the loop runs it), die_at=N (rank 1 dies in its N-th step, inside the whole of ``train()``).
With torchrun's variables in the environment it is one of several processes; without them, one
process on its own.
"""

import contextlib
import hashlib
import json
import os
import sys

import torch

from alexnet.data import preprocess
from alexnet.progress import SILENT
from alexnet.train import distributed, hybrid, loop
from alexnet.train.config import TrainConfig
from alexnet.train.loop import Interrupted, resume_config, train_one_epoch
from alexnet.train.session import set_up
from alexnet.world import World
from ddp_worker import _NoStop  # noqa: E402 (tests/ is on the path: this file's folder)


def config(data, out, batch, steps, **changes):
    # As tests/ddp_worker.py: Caffe's initialization, whose first steps do not amplify float
    # rounding, so several processes and one can be compared closely.
    settings = dict(batch_size=batch, epochs=1, dropout=0.0, seed=3, data=str(data), init="caffe", out=str(out),
                    devices="cpu", workers=0, ten_crop=False, max_steps=steps, log_every=1, overwrite=True)
    return TrainConfig.from_preset("builtin", **{**settings, **changes})


def run(data, out, batch, steps, result, world=None, evaluate=False, resume=False, **changes):
    """``steps`` steps of epoch 1 (``resume``: continued from the run in ``out``)."""
    world = World.from_env() if world is None else world
    with _recorded() as inputs:
        # A resumed run keeps its own configuration; ``changes`` may set how this session runs.
        run_config = resume_config(str(out), max_steps=steps, **changes) if resume else config(
            data, out, batch, steps, **changes)
        session = set_up(run_config, resume=str(out) if resume else None, world=world)
        try:
            train_one_epoch(session, 0, _NoStop())
        except Interrupted:
            pass  # max_steps: stopped after saving, as a user's run would
    state = {k: v.detach().cpu() for k, v in session.state.model.state_dict().items()}  # canonical: gathered
    if world.rank:  # the other ranks' nets by digest only: the disk is shared
        state = {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in state.items()}
    torch.save({"state": state, "inputs": inputs,
                "communication": hybrid.communication(session), "progress": session.state.progress.as_dict(),
                "val": session.evaluate("val", SILENT) if evaluate else None,
                "world": [world.rank, world.size]}, str(result))
    session.run.release()
    distributed.finish(session.started_group)


@contextlib.contextmanager
def _recorded():
    """The (images, labels) each hybrid step of this process trains on, as they arrive."""
    inputs, step = [], hybrid.train_step

    def recording(replica, images, labels, *args, **kwargs):
        inputs.append((images.detach().cpu().clone(), labels.cpu().clone()))
        return step(replica, images, labels, *args, **kwargs)
    hybrid.train_step = recording
    try:
        yield inputs
    finally:
        hybrid.train_step = step


def _in_float64():
    """The net (before its optimizer is made) and every batch in float64; the hybrid step's loss
    follows its logits' precision."""
    placed, augment = hybrid.placed, preprocess.Preprocess.augment
    hybrid.placed = lambda model, config, world: placed(model, config, world).double()
    preprocess.Preprocess.augment = lambda self, *args, **kwargs: augment(self, *args, **kwargs).double()


def run_until_rank_1_dies(data, out, batch, steps, die_at, **changes):
    """The whole of ``train()``, with rank 1's process ending abruptly in step ``die_at``."""
    if World.from_env().rank == 1:
        step = hybrid.train_step

        def dying(*args, **kwargs):
            dying.calls += 1
            if dying.calls >= die_at:
                os._exit(3)
            return step(*args, **kwargs)
        dying.calls = 0
        hybrid.train_step = dying
    loop.train(config(data, out, batch, steps, **changes))


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    data, out, batch, steps, result, *settings = sys.argv[1:]
    torch.set_num_threads(1)
    changes = {key: _value(value) for key, value in (s.split("=", 1) for s in settings)}
    if changes.pop("float64", False):
        _in_float64()
    if "die_at" in changes:
        run_until_rank_1_dies(data, out, int(batch), int(steps), changes.pop("die_at"), **changes)
    else:
        run(data, out, int(batch), int(steps), result, **changes)
