"""One epoch of uint8 batches, in an order fixed by (seed, epoch), resumable at any batch.

The loader only reads: batches are (B, 3, 256, 256) uint8, exactly as stored, and the paper's
crops, flips, mean and colour noise run afterwards on the training device
(``alexnet.data.transforms``). Worker processes read whole batches; a bad image comes back
as a message, not an exception, so the main process raises it as one ``DataError`` line (or,
for a dataset opened with ``skip_bad=True``, drops it and counts it).
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError
from .images import IMAGE_SIZE


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(processes: int = 1) -> int:
    """One core is left to the training process; at most 8 readers, which feed a GPU with
    folder JPEGs and are more than the packed format needs. With several training processes
    on the node (torchrun), each gets its share of the cores."""
    return max(1, min(8, cpu_cores() // max(1, processes) - 1))


#: More data-loading processes than this is a typing mistake, not a speed-up: each holds a copy
#: of the dataset's index and competes for the same cores (and a fork bomb on a shared machine).
MAX_WORKERS = max(8, 4 * (os.cpu_count() or 1))


def workers_rule(workers: Optional[int], option: str = "--workers"):
    """(ok, the one line that says what is wrong) for a count of data-loading processes: every
    command that takes ``-j/--workers`` keeps this rule."""
    ok = workers is None or (isinstance(workers, int) and not isinstance(workers, bool)
                             and 0 <= workers <= MAX_WORKERS)
    return ok, f"{option} must be between 0 and {MAX_WORKERS} (4 per core); got {workers}"


def check_workers(workers: Optional[int], option: str = "--workers") -> Optional[int]:
    """``workers`` where ``workers_rule`` holds, else a ``ConfigError`` saying so."""
    ok, message = workers_rule(workers, option)
    if not ok:
        raise ConfigError(message)
    return workers


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed from (seed, epoch): every pair gets its own, unrelated shuffle."""
    digest = hashlib.blake2b(f"alexnet-order/{int(seed)}/{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def epoch_order(n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> List[int]:
    """The order in which one epoch visits positions 0..n-1."""
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


def _identity(batch):
    return batch


class _BatchReader(Dataset):
    """Reads a whole batch in one call (in a worker process when there are workers).
    Returns (images (b, 3, S, S) uint8, labels int64 (b,), skipped messages, error or None)."""

    def __init__(self, dataset: Dataset, skip_bad: bool):
        self.dataset = dataset
        self.skip_bad = skip_bad

    def __getitem__(self, indices: Sequence[int]):
        if getattr(self.dataset, "reads_batches", False):  # packed raw: one read for the batch
            images, labels = self.dataset.read_batch(indices)
            return images, labels, [], None
        size = getattr(self.dataset, "image_size", IMAGE_SIZE)
        images = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        labels = torch.empty(len(indices), dtype=torch.int64)
        skipped, kept = [], 0
        for index in indices:
            try:
                image, label = self.dataset[index]
            except DataError as error:
                if not self.skip_bad:
                    return None, None, skipped, str(error)
                skipped.append(str(error))
                continue
            images[kept] = image
            labels[kept] = label
            kept += 1
        return images[:kept], labels[:kept], skipped, None


class Loader:
    """One epoch: iterate for ``(images, labels)``; ``len`` is the number of batches it yields.

    ``skipped`` counts the unreadable images dropped so far (their messages in
    ``skipped_files``); ``consumed`` is how many of the epoch's positions the yielded batches
    (and any all-bad batches before them) covered, for callers that checkpoint mid-epoch.
    """

    def __init__(self, dataset: Dataset, batches: List[List[int]], *, workers: int, pin_memory: bool,
                 skip_bad: bool, epoch_batches: int):
        self.dataset = dataset
        self.batches = batches
        self.workers = workers
        self.pin_memory = pin_memory
        self.skip_bad = skip_bad
        self.epoch_batches = epoch_batches  # batches in the whole epoch
        self.skipped = 0
        self.skipped_files: List[str] = []
        self.consumed = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        self.skipped, self.skipped_files, self.consumed = 0, [], 0
        if not self.batches:
            return
        loader = DataLoader(_BatchReader(self.dataset, self.skip_bad), batch_size=None, sampler=self.batches,
                            num_workers=self.workers, collate_fn=_identity, pin_memory=self.pin_memory,
                            prefetch_factor=2 if self.workers else None,
                            # DataLoader draws its workers' base seed from this generator; without
                            # one it would draw from torch's global RNG, which dropout also uses,
                            # and a run resumed mid-epoch would get other dropout masks.
                            generator=torch.Generator().manual_seed(0))
        for batch, (images, labels, skipped, error) in zip(self.batches, loader):
            if error is not None:
                raise DataError(error)
            self.skipped += len(skipped)
            self.skipped_files.extend(skipped)
            self.consumed += len(batch)
            if len(labels):
                yield images, labels


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                skip_batches: int = 0, workers: Optional[int] = None, drop_last: bool = False,
                pin_memory: bool = False, indices: Optional[Sequence[int]] = None,
                shard: Optional[Tuple[int, int]] = None) -> Loader:
    """An iterable over ONE epoch of ``dataset`` yielding ``(images, labels)``: uint8
    (B, 3, 256, 256) and int64 (B,).

    The order is a deterministic function of (seed, epoch) when ``shuffle`` is True (a
    ``torch.Generator`` seeded from both), the dataset's order otherwise; ``skip_batches=k``
    starts at batch k of that same order, so a run resumed mid-epoch sees exactly the batches
    it had not seen. ``indices`` restricts the epoch to those dataset positions (in that order
    before shuffling). ``workers=None`` is ``default_workers()``.

    ``shard=(rank, replicas)``: ``batch_size`` is the global batch, cut from the one order
    every replica shares, and this replica yields its ``rank``-th slice of each batch
    (``batch_size // replicas`` images), so the replicas together see exactly the batches one
    process would, and ``skip_batches`` counts global batches.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ConfigError(f"workers must be 0 (read in this process) or more; got {workers}")
    positions = list(range(len(dataset))) if indices is None else list(indices)
    order = [positions[i] for i in epoch_order(len(positions), shuffle=shuffle, seed=seed, epoch=epoch)]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shard is not None:
        rank, replicas = shard
        if batch_size % replicas or not 0 <= rank < replicas:
            raise ConfigError(f"shard {rank} of {replicas}: the batch of {batch_size} must divide evenly")
        share = batch_size // replicas
        batches = [batch[rank * share:(rank + 1) * share] for batch in batches]
    if not 0 <= skip_batches <= len(batches):
        raise ConfigError(f"skip_batches must be between 0 and {len(batches)} (batches in the epoch); got {skip_batches}")
    return Loader(dataset, batches[skip_batches:], workers=workers, pin_memory=pin_memory,
                  skip_bad=bool(getattr(dataset, "skip_bad", False)),
                  epoch_batches=len(batches))
