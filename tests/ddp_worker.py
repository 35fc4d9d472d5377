"""One replica of tests/test_distributed.py, run as its own process (or in the test's process
for the one-process reference): the real set-up and training loop for a few steps, then the
parameters and the towers' traffic saved for the test to compare.

    python tests/ddp_worker.py DATA OUT_DIR DEVICES GLOBAL_BATCH STEPS RESULT.pt

With torchrun's variables (WORLD_SIZE, RANK, ...) in the environment it is one of several
replicas; without them, one process on its own.
"""

import os
import sys

import torch

from alexnet.train import distributed, hybrid
from alexnet.world import World
from alexnet.train import loop
from alexnet.train.loop import Interrupted, train_one_epoch
from alexnet.train.config import TrainConfig
from alexnet.train.session import set_up


class _NoStop:
    requested = None

    def stopping(self, world, device):
        return lambda: False


def _config(data, out, devices, batch, steps):
    # Caffe's initialization: a net whose first steps do not amplify float rounding, so replicas
    # and one process can be compared closely (what is compared is the training, not the recipe).
    return TrainConfig.from_preset("builtin", batch_size=batch, epochs=1, dropout=0.0, seed=3, data=str(data),
                                   init="caffe",
                                   out=str(out), devices=devices, workers=0, ten_crop=False, max_steps=steps,
                                   log_every=1, overwrite=True)


def run_replica(data, out, devices, batch, steps, result, world=None):
    world = World.from_env() if world is None else world
    session = set_up(_config(data, out, devices, batch, steps), world=world)
    session.state.model.reset_traffic()
    try:
        train_one_epoch(session, 0, _NoStop())
    except Interrupted:
        pass  # max_steps: stopped after saving, as a user's run would
    model = session.state.model
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "traffic": model.traffic(), "progress": session.state.progress.as_dict(),
                "communication": hybrid.communication(session),
                "placement": session.plan.placement.as_dict(), "world": [world.rank, world.size]}, str(result))
    distributed.finish(session.started_group)


def run_until_rank_1_dies(data, out, devices, batch, steps, die_at):
    """The whole of ``train()``, with rank 1's process ending abruptly at step ``die_at``."""
    if World.from_env().rank == 1:
        step = loop.train_step

        def dying_step(session_model, *args, **kwargs):
            dying_step.calls += 1
            if dying_step.calls >= die_at:
                os._exit(3)
            return step(session_model, *args, **kwargs)
        dying_step.calls = 0
        loop.train_step = dying_step
    loop.train(_config(data, out, devices, batch, steps))


if __name__ == "__main__":
    data, out, devices, batch, steps, result = sys.argv[1:7]
    torch.set_num_threads(1)
    if result.startswith("die-at="):
        run_until_rank_1_dies(data, out, devices, int(batch), int(steps), int(result.split("=")[1]))
    else:
        run_replica(data, out, devices, int(batch), int(steps), result)
