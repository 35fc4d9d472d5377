"""Data-parallel replicas of the net: one process per replica, started by ``torchrun``,
gradients averaged between replicas by ``DistributedDataParallel``.

Each replica keeps the paper's model parallelism inside it (two towers on two GPUs, or the
grouped net on one device); data parallelism runs across replicas:

    torchrun --standalone --nproc-per-node 4 -m alexnet train --data /data/imagenet   # 8 GPUs

The recipe's batch is the *global* batch (the paper's 128): each of the W replicas takes
128 / W images of every batch of the one epoch order all ranks share, and draws the random
crops, flips and colour noise for the whole global batch from the same seeded stream, using
its own slice. So W replicas at batch B/W compute what one process at batch B computes (to
floating-point reduction order), and a run resumes with any number of processes.

Only rank 0 reports and writes (checkpoints, metrics, curves); validation is split between
the ranks and its sums reduced, so every rank sees the same error and the learning-rate
schedule drops on every rank together. Every collective has a timeout, so a rank that dies
stops the others with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..devices import Placement
from ..errors import AlexNetError, ConfigError, TrainingError
from ..world import World

#: Seconds a collective waits for the other ranks before failing (--collective-timeout).
DEFAULT_TIMEOUT = 600


def replica_batch(batch_size: int, world: World) -> int:
    """Each replica's share of the global batch."""
    if batch_size % world.size:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must divide among the {world.size} "
                          f"processes; use a multiple of {world.size} (e.g. {batch_size - batch_size % world.size or world.size})")
    return batch_size // world.size


def backend_for(placement: Placement) -> str:
    """NCCL when every device of the replica is a GPU, gloo otherwise (the CPU, or 0,cpu)."""
    return "nccl" if placement.on_gpu else "gloo"


def start(world: World, placement: Placement, timeout_s: float = DEFAULT_TIMEOUT) -> bool:
    """Join the process group (the address comes from torchrun's environment). Returns True
    when this call started it, for :func:`finish`."""
    if not world.distributed or dist.is_initialized():
        return False
    if "MASTER_ADDR" not in os.environ:
        raise ConfigError(f"WORLD_SIZE={world.size} but MASTER_ADDR is not set: start the processes with torchrun "
                          f"(see docs/distributed.md)")
    backend = backend_for(placement)
    if backend == "nccl":
        torch.cuda.set_device(placement.primary)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return True


def finish(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def replicate(model: nn.Module, world: World) -> nn.Module:
    """The module the training step calls: the model itself, or with several processes the
    model inside DistributedDataParallel as PyTorch documents for a module spanning several
    devices (``device_ids=None``, ``output_device=None``). DDP averages the gradients; the
    towers' exchanges inside the model are unchanged."""
    if not world.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=None, output_device=None)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (dropout masks): rank 0 keeps ``seed``,
    so one process draws exactly what it always drew; the others get unrelated streams."""
    if rank == 0:
        return seed
    digest = hashlib.blake2b(f"alexnet-rank/{int(seed)}/{int(rank)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def replica_failed(error: BaseException, world: World, step: int) -> Optional[TrainingError]:
    """What this rank says when training stops on an error while other replicas run (most
    often: another rank died and the collective with it failed, which gloo and NCCL report
    within the collective timeout). None for one process or for the library's own errors,
    which already say what happened."""
    if not world.distributed or isinstance(error, AlexNetError):
        return None
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    saved = f" ({error.saved})" if getattr(error, "saved", None) else ""
    return TrainingError(f"{world.describe()} stopped at step {step}{saved}: {first} -- if another replica died, its "
                         f"own error and torchrun's report ('Root Cause') name its rank")
