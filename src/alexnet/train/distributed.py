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

import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..devices import Placement
from ..errors import AlexNetError, ConfigError, TrainingError

#: What torchrun sets in every process it starts.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
#: Seconds a collective waits for the other ranks before failing (--collective-timeout).
DEFAULT_TIMEOUT = 600


@dataclass(frozen=True)
class World:
    """This process's place among the replicas: ``rank`` of ``size`` in all, ``local_rank``
    of ``local_size`` on this node. The default is one process on its own."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "World":
        """The world torchrun describes in the environment (one process when it does not)."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()
        values = {}
        for key in ENV_KEYS:
            text = env.get(key, "0" if key.startswith(("RANK", "LOCAL_RANK")) else env["WORLD_SIZE"])
            try:
                values[key] = int(text)
            except ValueError:
                raise ConfigError(f"environment variable {key}={text!r} is not an integer (set by torchrun)") from None
        world = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
        if not (0 <= world.rank < world.size and 0 <= world.local_rank < world.local_size <= world.size):
            raise ConfigError(f"inconsistent torchrun environment: rank {world.rank} of {world.size}, "
                              f"local rank {world.local_rank} of {world.local_size}")
        return world

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that reports and writes."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size} (local rank {self.local_rank} of {self.local_size})"


SINGLE = World()


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


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (nothing with one process)."""
    if world.distributed:
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (for stopping together)."""
    if not world.distributed:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def gather(obj: Any, world: World) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (it may write caches: the built-in dataset, statistics),
    then the others, which find them written."""
    if world.distributed and not world.is_main:
        dist.barrier()
    yield
    if world.distributed and world.is_main:
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (dropout masks): rank 0 keeps ``seed``,
    so one process draws exactly what it always drew; the others get unrelated streams."""
    if rank == 0:
        return seed
    digest = hashlib.blake2b(f"alexnet-rank/{int(seed)}/{int(rank)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def replica_failed(error: BaseException, world: World, progress: Mapping[str, int]) -> Optional[TrainingError]:
    """What this rank says when training stops on an error while other replicas run (most
    often: another rank died and the collective with it failed, which gloo and NCCL report
    within the collective timeout). None for one process or for the library's own errors,
    which already say what happened."""
    if not world.distributed or isinstance(error, AlexNetError):
        return None
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return TrainingError(f"{world.describe()} stopped at step {progress.get('step', 0)}: {first[:300]} -- if another "
                         f"replica died, its own error and torchrun's report ('Root Cause') name its rank")
