"""Loader throughput: images per second of each way of reading a dataset, side by side.

The same training images, in the same shuffled order, with the same batch size, workers and
(optionally) the same augmentation, through each path:

- ``folder-pil``: JPEG files, decoded and resized by PIL (the reference reader);
- ``folder-tvjpeg``: the same files through torchvision's libjpeg-turbo decoder and resize;
- ``packed-raw``: ``alexnet prepare --format raw``: one memory-mapped gather per batch;
- ``packed-jpeg``: ``alexnet prepare --format jpeg``: 256×256 JPEGs, decoded by torchvision.

Packed copies of a folder dataset are prepared once into the cache folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..errors import ConfigError
from .files import cache_entry
from .folders import FolderDataset
from .loader import make_loader
from .packed import PackedDataset, packed_state, prepare, read_meta
from .roots import resolve_data_root
from .stats import load_or_compute_stats
from .transforms import train_crops

PATHS = ("folder-pil", "folder-tvjpeg", "packed-raw", "packed-jpeg")
NOTES = {
    "folder-pil": "PIL decode + bilinear resize + centre crop, per image",
    "folder-tvjpeg": "torchvision (libjpeg-turbo) decode + antialiased resize, per image",
    "packed-raw": "uint8 memory map, one gather per batch",
    "packed-jpeg": "256x256 JPEG (4:4:4) decoded by torchvision, per image",
}


def packed_copy(root: Path, fmt: str, progress: bool = False) -> Path:
    """A packed copy of the folder dataset ``root`` in the cache (prepared on first use)."""
    dst = cache_entry("packed", root, f"-{fmt}")
    if packed_state(dst) != "finished":
        prepare(root, dst, format=fmt, progress=progress, overwrite=packed_state(dst) is not None)
    return dst


def _open_path(root: Path, path: str, progress: bool):
    """The training split read through ``path``, or a reason it cannot be."""
    is_packed = packed_state(root) is not None
    if path.startswith("folder-"):
        if is_packed:
            return None, "not measured: the dataset is packed, not folders"
        return FolderDataset(root, "train", decoder="pil" if path == "folder-pil" else "torchvision"), None
    fmt = path.split("-", 1)[1]
    if is_packed:
        if read_meta(root)["format"] != fmt:
            return None, f"not measured: the dataset is packed as {read_meta(root)['format']}"
        return PackedDataset(root, "train"), None
    return PackedDataset(packed_copy(root, fmt, progress), "train"), None


class _Reader:
    """One path's loader, timed batch by batch (wall clock and this process's CPU time)."""

    def __init__(self, dataset, batch_size: int, workers: int, seed: int, warmup: int, augment, stats):
        self.loader = make_loader(dataset, batch_size, shuffle=True, seed=seed, workers=workers, drop_last=True)
        self.batches = iter(self.loader)
        self.device, self.stats = augment, stats
        self.generator = torch.Generator(augment).manual_seed(seed) if augment is not None else None
        self.images, self.seconds, self.cpu_seconds = 0, 0.0, 0.0
        for _ in range(warmup):
            self._read_one()

    def _read_one(self) -> int:
        images, _ = next(self.batches)
        if self.device is not None:
            train_crops(images.to(self.device), self.stats, self.generator).sum().item()  # .item() waits for the device
        return len(images)

    def read(self, count: int):
        wall, cpu = time.perf_counter(), time.process_time()
        self.images += sum(self._read_one() for _ in range(count))
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu


def measure_loader_paths(root=None, *, batch_size: int = 64, workers: int = 0, batches: int = 20,
                         paths: Sequence[str] = PATHS, augment_device=None, seed: int = 0, warmup: int = 1,
                         rounds: int = 5, progress: bool = False) -> List[Dict]:
    """Images per second of each path, measured side by side in this call.

    Every path reads the same shuffled training images (``seed``): ``warmup`` untimed batches,
    then ``batches`` timed ones (fewer if the split is smaller). With ``workers=0`` the timed
    batches are read in ``rounds`` interleaved turns (path 1, path 2, ..., path 1, ...) so a
    machine shared with other work slows every path alike; with workers, one path after the
    other (interleaving would let idle workers prefetch). ``augment_device=None`` times the
    reading alone; a device ("cpu", "cuda") also moves each batch there and applies
    ``train_crops``, as training does.

    Returns one dict per path: path, images_per_second (wall clock), workers, batch_size,
    images, seconds, note, and with ``workers=0`` cpu_seconds and images_per_cpu_second (this
    process's CPU time: images per second per core, whatever else the machine runs). torch
    runs single-threaded while it measures.
    """
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        raise ConfigError(f"unknown loader path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    root = resolve_data_root(root)
    device = torch.device(augment_device) if augment_device is not None else None
    stats = load_or_compute_stats(root, progress=progress).to(device) if device is not None else None
    rows, readers, timed = [], {}, batches
    for path in paths:
        dataset, reason = _open_path(root, path, progress)
        rows.append({"path": path, "images_per_second": None, "workers": workers, "batch_size": batch_size,
                     "images": 0, "seconds": 0.0, "note": reason or NOTES[path] + (
                         f"; train_crops on {device}" if device is not None else "; no augmentation")})
        if dataset is not None:
            batches_in_split = len(dataset) // batch_size
            if batches_in_split <= warmup:
                raise ConfigError(f"{root}: {len(dataset)} training images make {batches_in_split} batches of "
                                  f"{batch_size}; need more than warmup={warmup}")
            readers[path] = _Reader(dataset, batch_size, workers, seed, warmup, device, stats)
            timed = min(timed, batches_in_split - warmup)
    turns = max(1, min(rounds, timed)) if workers == 0 else 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: torch's own threads would blur "per core"
    try:
        for turn in range(turns):
            count = timed * (turn + 1) // turns - timed * turn // turns
            for reader in readers.values():
                reader.read(count)
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        reader = readers.get(row["path"])
        if reader is not None:
            row.update(images_per_second=reader.images / reader.seconds, images=reader.images,
                       seconds=reader.seconds)
            if workers == 0:
                row.update(cpu_seconds=reader.cpu_seconds, images_per_cpu_second=reader.images / reader.cpu_seconds)
    return rows


def format_throughput(results: List[Dict]) -> str:
    """The results as a table, each rate also relative to the first path measured."""
    measured = [row for row in results if row["images_per_second"]]
    base = measured[0] if measured else None
    per_core = all("images_per_cpu_second" in row for row in measured)
    lines = [f"{'path':<14} {'images/s':>9} {'ratio':>6}" + (f" {'per CPU s':>10} {'ratio':>6}" if per_core else "")
             + f" {'images':>7} {'seconds':>8}  note"]
    for row in results:
        if not row["images_per_second"]:
            lines.append(f"{row['path']:<14} {'-':>9}  {row['note']}")
            continue
        line = f"{row['path']:<14} {row['images_per_second']:>9.1f} {row['images_per_second'] / base['images_per_second']:>5.1f}x"
        if per_core:
            line += (f" {row['images_per_cpu_second']:>10.1f} "
                     f"{row['images_per_cpu_second'] / base['images_per_cpu_second']:>5.1f}x")
        lines.append(line + f" {row['images']:>7} {row['seconds']:>8.2f}  {row['note']}")
    return "\n".join(lines)
