"""The processes a job runs on: one on its own, or several started by ``torchrun``, and the few
collectives the package's loops need (sums of metrics, a stop on any rank, objects gathered, rank
0 first). ``alexnet.train.distributed`` joins the process group and replicates the net.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional

import torch
import torch.distributed as dist

from .errors import ConfigError

#: What torchrun sets in every process it starts.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
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
