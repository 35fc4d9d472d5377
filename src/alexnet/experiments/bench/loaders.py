"""Loader throughput: images per second of each way of reading a dataset, side by side, and
training fed by the real loader beside the same step on a synthetic batch.

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
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ...data import load_or_compute_stats, make_loader, open_dataset, resolve_data_root
from ...data.folders import FolderDataset
from ...data.packed import PackedDataset, packed_state, prepare, read_meta
from ...data.preprocess import Preprocess
from ...data.transforms import train_crops
from ...devices import unavailable
from ...errors import AlexNetError, ConfigError
from ...files import cache_entry
from ...precision import autocast_dtype
from ...progress import SILENT, Reporter
from ...train.optim import paper_sgd
from ...train.step import train_step
from . import measure
from .plan import BenchSettings, Setup, placements
from .runner import build, find_row

PATHS = ("folder-pil", "folder-tvjpeg", "packed-raw", "packed-jpeg")
NOTES = {
    "folder-pil": "PIL decode + bilinear resize + centre crop, per image",
    "folder-tvjpeg": "torchvision (libjpeg-turbo) decode + antialiased resize, per image",
    "packed-raw": "uint8 memory map, one gather per batch",
    "packed-jpeg": "256x256 JPEG (4:4:4) decoded by torchvision, per image",
}


def packed_copy(root: Path, fmt: str, reporter: Reporter = SILENT) -> Path:
    """A packed copy of the folder dataset ``root`` in the cache (prepared on first use)."""
    dst = cache_entry("packed", root, f"-{fmt}")
    if packed_state(dst) != "finished":
        prepare(root, dst, format=fmt, reporter=reporter, overwrite=packed_state(dst) is not None)
    return dst


def _open_path(root: Path, path: str, reporter: Reporter):
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
    return PackedDataset(packed_copy(root, fmt, reporter), "train"), None


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
                         rounds: int = 5, reporter: Reporter = SILENT) -> List[Dict]:
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
    root = resolve_data_root(root, reporter)
    device = torch.device(augment_device) if augment_device is not None else None
    stats = load_or_compute_stats(root, reporter=reporter).to(device) if device is not None else None
    rows, readers, timed = [], {}, batches
    for path in paths:
        dataset, reason = _open_path(root, path, reporter)
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


def run_loaders(settings: BenchSettings, batch_size: int) -> Dict[str, object]:
    """The data pipeline's loader paths (``measure_loader_paths``) on the same images."""
    try:
        # In this process (no workers), in interleaved rounds: images per second per core, the
        # figure that decides how many cores a GPU needs. With workers the first batches are
        # prefetched while the warm-up runs, and a short timed window would flatter every path.
        rows = measure_loader_paths(settings.data_root, batch_size=batch_size, workers=0,
                                    batches=5 if settings.quick else 20)
    except AlexNetError as error:  # no dataset here, for example: the rest of the run stands
        return {"status": "failed", "reason": str(error)}
    return {"status": "ok", "batch_size": batch_size, "workers": 0, "rows": rows}


def run_end_to_end(settings: BenchSettings, rows: List[Dict[str, object]], log) -> Dict[str, object]:
    """Training fed by the real loader: the dataset (--data-root, else the built-in one) read
    through ``make_loader`` with ``loader_workers`` processes, the paper's augmentation on the
    device (``Preprocess.train``) and the grouped net's training step, as ``alexnet train``
    runs them. Beside it, the same net's training step on a synthetic batch (the results row)
    and the loader with the augmentation alone, so the verdict says which one is the limit."""
    device = placements(settings.devices)[1].primary
    reason = unavailable([device])
    if reason:
        return {"status": "not run", "reason": reason}
    batch = settings.batch_sizes[0]
    precision = settings.precisions[0]
    try:
        root = resolve_data_root(settings.data_root)
        dataset = open_dataset(root, "train")
        stats = load_or_compute_stats(root, workers=settings.loader_workers).to(device)
    except AlexNetError as error:
        return {"status": "failed", "reason": str(error)}
    steps = settings.warmup + settings.steps * settings.repeats
    if len(dataset) < steps * batch:
        steps = len(dataset) // batch
    if steps <= settings.warmup:
        return {"status": "not run", "reason": f"{root}: {len(dataset)} training images give fewer than "
                                               f"{settings.warmup + 1} batches of {batch}"}
    amp = autocast_dtype(precision)
    preprocess = Preprocess(stats=stats)
    setup = Setup("grouped", (device,), settings.lrn_impl if settings.lrn_impl != "both" else "fast", False, False)
    log(f"end to end: {len(dataset)} images from {root}, batch {batch}, {settings.loader_workers} workers")

    def timed(step: Callable[[torch.Tensor, torch.Tensor], object]) -> float:
        generator = torch.Generator(device).manual_seed(settings.seed)
        loader = make_loader(dataset, batch, shuffle=True, seed=settings.seed, workers=settings.loader_workers,
                             drop_last=True, pin_memory=device.type == "cuda")
        start = None
        for i, (images, labels) in enumerate(loader):
            if i == settings.warmup:
                measure.synchronize([device])
                start = time.perf_counter()
            if i == steps:
                break
            step(preprocess.augment(images.to(device, non_blocking=True), generator), labels.to(device))
        measure.synchronize([device])
        return (steps - settings.warmup) * batch / (time.perf_counter() - start)

    model = build(setup, settings.seed)
    optimizer = paper_sgd(model)
    model.train()
    training = timed(lambda x, y: train_step(model, x, y, optimizer, amp_dtype=amp).loss)
    del model, optimizer
    loading = timed(lambda x, y: x.sum())  # the same batches and augmentation, no model
    synthetic = find_row(rows, model="grouped", devices=[str(device)], mode="train", batch_size=batch,
                         precision=precision, lrn_impl=setup.lrn_impl, channels_last=False, compile=False)
    model_only = synthetic["images_per_s"]["median"] if synthetic else None
    verdict = limit(loading, model_only)
    return {"status": "ok", "data_root": str(root), "images": len(dataset), **setup.as_dict(),
            "batch_size": batch, "precision": precision, "workers": settings.loader_workers,
            "timed_steps": steps - settings.warmup, "warmup_steps": settings.warmup,
            "train_images_per_s": training, "loader_images_per_s": loading,
            "synthetic_train_images_per_s": model_only,
            "fraction_of_synthetic": training / model_only if model_only else None, "verdict": verdict}


def limit(loader_images_per_s: float, model_images_per_s: Optional[float]) -> str:
    """Which one limits training: the loader (with the augmentation) or the model's step."""
    if model_images_per_s is None:
        return "no synthetic-input row of the grouped net to compare with"
    if loader_images_per_s < model_images_per_s:
        return "the loader is the limit: it reads fewer images per second than the model trains on"
    return "the model is the limit: the loader reads faster than the model trains"
