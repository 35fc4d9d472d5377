"""Data-parallel replicas of the net: one process per replica, started by ``torchrun``,
gradients averaged between replicas by ``DistributedDataParallel`` (``--parallel data``, the
default; ``alexnet.train.hybrid`` is the other way, ``--parallel hybrid``).

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

What the collectives move is counted (``Collectives``): DDP's gradient buckets pass through a
communication hook that counts them and then all-reduces them as DDP's own hook does.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..devices import Placement
from ..errors import AlexNetError, ConfigError, TrainingError
from ..world import World

#: Seconds a collective waits for the other ranks before failing (--collective-timeout).
DEFAULT_TIMEOUT = 600
#: How several processes share the work (--parallel): "data", every process a whole replica of
#: the net (the gradients all-reduced); "hybrid", Krizhevsky's 2014 scheme (alexnet.train.hybrid):
#: the conv layers data-parallel, fc6-fc8 split between the processes by output units.
PARALLEL = ("data", "hybrid")
#: Each collective's bytes on the wire per process, as a fraction of the tensor it is handed,
#: for the bandwidth-optimal ring algorithm with K processes (what NCCL's "bus bandwidth" counts):
#: an all-gather or a reduce-scatter sends (K-1)/K of the whole tensor, an all-reduce (a
#: reduce-scatter then an all-gather) twice that.
RING_PASSES = {"all_gather": 1, "reduce_scatter": 1, "all_reduce": 2}


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


class Collectives:
    """What this process handed to each named collective since the last ``reset``: calls and
    bytes (the tensor all-reduced, the whole tensor gathered, the whole tensor reduce-scattered),
    counted from the tensors themselves. ``sent`` turns bytes into what the process puts on the
    wire (``RING_PASSES``). ``first_step``: the training step the counts start after."""

    def __init__(self, world: World, first_step: int = 0):
        self.world, self.first_step = world, first_step
        self.reset()

    def reset(self) -> None:
        self.table: Dict[str, Dict] = {}

    def add(self, name: str, op: str, tensor: torch.Tensor) -> None:
        entry = self.table.setdefault(name, {"op": op, "calls": 0, "bytes": 0})
        entry["calls"] += 1
        entry["bytes"] += tensor.numel() * tensor.element_size()

    def sent(self, name: str) -> float:
        """The bytes this process sent for ``name`` so far."""
        entry, k = self.table[name], self.world.size
        return entry["bytes"] * RING_PASSES[entry["op"]] * (k - 1) / k

    def counts(self) -> Dict[str, Dict]:
        return {name: {**entry, "sent": self.sent(name)} for name, entry in self.table.items()}


def counted_all_reduce(state: Tuple[Collectives, str, bool], bucket):  # no return annotation: DDP checks it
    """A DDP communication hook: count the bucket, then what DDP's default hook does (divide by
    the number of processes when averaging, all-reduce, hand the bucket back)."""
    collectives, name, average = state
    tensor = bucket.buffer()
    collectives.add(name, "all_reduce", tensor)
    if average:
        tensor.div_(collectives.world.size)
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda done: done.value()[0])


def counted_ddp(module: nn.Module, collectives: Collectives, name: str) -> nn.Module:
    """``module`` inside DistributedDataParallel as PyTorch documents for a module spanning
    several devices (``device_ids=None``, ``output_device=None``), its gradients averaged
    through ``counted_all_reduce``; ``.collectives`` holds the counts."""
    ddp = nn.parallel.DistributedDataParallel(module, device_ids=None, output_device=None)
    ddp.register_comm_hook((collectives, name, True), counted_all_reduce)
    ddp.collectives = collectives
    return ddp


def replicate(model: nn.Module, world: World, first_step: int = 0) -> nn.Module:
    """The module the training step calls: the model itself, or with several processes the
    model inside DistributedDataParallel (``counted_ddp``). DDP averages the gradients; the
    towers' exchanges inside the model are unchanged."""
    if not world.distributed:
        return model
    return counted_ddp(model, Collectives(world, first_step), "gradients all-reduce")


def derived_seed(*parts) -> int:
    """A seed drawn from ``parts`` (a name and numbers), unrelated to the seeds of other parts."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (dropout masks): rank 0 keeps ``seed``,
    so one process draws exactly what it always drew; the others get unrelated streams."""
    if rank == 0:
        return seed
    return derived_seed("alexnet-rank", int(seed), int(rank))


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
