"""Loader throughput: the same shuffled training images through each way of reading a dataset,
side by side (``NOTES``; packed copies of a folder dataset are prepared once into the cache);
and training fed by the real loader beside the same step on a synthetic batch."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ...data import load_or_compute_stats, make_loader, open_dataset, resolve_data_root
from ...data.folders import FolderDataset
from ...data.loader import default_workers
from ...data.packed import PackedDataset, packed_state, prepare, read_meta
from ...data.preprocess import Preprocess
from ...errors import AlexNetError, ConfigError
from ...files import cache_entry
from ...precision import autocast_dtype
from ...progress import SILENT, Reporter
from ...tables import plain_table
from ...train.step import train_step
from . import measure
from .cases import Bench, Case, placements, precision, why_not_run
from .runner import Runner

PATHS = ("folder-pil", "folder-tvjpeg", "packed-raw", "packed-jpeg")
NOTES = {
    "folder-pil": "PIL decode + bilinear resize + centre crop, per image",
    "folder-tvjpeg": "torchvision (libjpeg-turbo) decode + antialiased resize, per image",
    "packed-raw": "uint8 memory map, one gather per batch",
    "packed-jpeg": "256x256 JPEG (4:4:4) decoded by torchvision, per image",
}


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
    copy = cache_entry("packed", root, f"-{fmt}")  # prepared on first use
    if packed_state(copy) != "finished":
        prepare(root, copy, format=fmt, reporter=reporter, overwrite=packed_state(copy) is not None)
    return PackedDataset(copy, "train"), None


class _Reader:
    """Batches from ``loader`` timed as they are read (wall clock and this process's CPU time); with
    ``preprocess``, each moved to ``device``, augmented there and handed to ``step``, as training
    does. The device is synchronised at the end of a read, not between batches."""

    def __init__(self, loader, seed: int, warmup: int, device=None, preprocess: Optional[Preprocess] = None,
                 step: Callable[[torch.Tensor, torch.Tensor], object] = lambda images, labels: None):
        self.batches, self.device, self.preprocess, self.step = iter(loader), device, preprocess, step
        self.generator = torch.Generator(device).manual_seed(seed) if preprocess is not None else None
        self.images, self.seconds, self.cpu_seconds = 0, 0.0, 0.0
        self.read(warmup, timed=False)

    def read(self, count: int, timed: bool = True) -> None:
        wall, cpu, images_read = time.perf_counter(), time.process_time(), 0
        for images, labels in itertools.islice(self.batches, count):
            if self.preprocess is not None:
                images = self.preprocess.augment(images.to(self.device, non_blocking=True), self.generator)
                labels = labels.to(self.device, non_blocking=True)
            self.step(images, labels)
            images_read += len(images)
        measure.synchronize([self.device] if self.device is not None else [])
        if timed:
            self.images += images_read
            self.seconds += time.perf_counter() - wall
            self.cpu_seconds += time.process_time() - cpu


def measure_loader_paths(root=None, *, batch_size: int = 64, workers: int = 0, batches: int = 20,
                         paths: Sequence[str] = PATHS, augment_device=None, seed: int = 0, warmup: int = 1,
                         rounds: int = 5, reporter: Reporter = SILENT) -> List[Dict]:
    """Images per second of each path, side by side: the same shuffled training images
    (``seed``), ``warmup`` untimed batches, then ``batches`` timed ones (fewer if the split is
    smaller). With ``workers=0``, in ``rounds`` interleaved turns so that other work slows every
    path alike, and also per second of this process's CPU time (per core); with workers, one
    path after the other (interleaving would let idle workers prefetch). ``augment_device``:
    also move each batch there and augment it, as training does. torch runs
    single-threaded while it measures."""
    unknown = [path for path in paths if path not in PATHS]
    if unknown:
        raise ConfigError(f"unknown loader path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    root = resolve_data_root(root, reporter)
    device = torch.device(augment_device) if augment_device is not None else None
    preprocess = Preprocess(load_or_compute_stats(root, reporter=reporter).to(device)) if device is not None else None
    rows, readers, timed = [], [], batches
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
            loader = make_loader(dataset, batch_size, shuffle=True, seed=seed, workers=workers, drop_last=True)
            readers.append((rows[-1], _Reader(loader, seed, warmup, device, preprocess)))
            timed = min(timed, batches_in_split - warmup)
    turns = max(1, min(rounds, timed)) if workers == 0 else 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: torch's own threads would blur "per core"
    try:
        for turn in range(turns):
            count = timed * (turn + 1) // turns - timed * turn // turns
            for _, reader in readers:
                reader.read(count)
    finally:
        torch.set_num_threads(threads)
    for row, reader in readers:
        row.update(images_per_second=reader.images / reader.seconds, images=reader.images, seconds=reader.seconds)
        if workers == 0:
            row.update(cpu_seconds=reader.cpu_seconds, images_per_cpu_second=reader.images / reader.cpu_seconds)
    return rows


def format_throughput(results: List[Dict]) -> str:
    """The results as a table, each rate also relative to the first path measured."""
    measured = [row for row in results if row["images_per_second"]]
    rates = ["images_per_second"] + ["images_per_cpu_second"] * all("images_per_cpu_second" in r for r in measured)
    rows = []
    for row in results:
        ran = bool(row["images_per_second"])
        rates_cells = [cell for rate in rates for cell in (
            (f"{row[rate]:.1f}", f"{row[rate] / measured[0][rate]:.1f}x") if ran else ("-", ""))]
        rows.append((row["path"], *rates_cells, row["images"] if ran else "", f"{row['seconds']:.2f}" if ran else "",
                     row["note"]))
    header = ("path", "images/s", "ratio", "per CPU s", "ratio")[:1 + 2 * len(rates)] + ("images", "seconds", "note")
    return "\n".join(plain_table(header, rows, [False] + [True] * (2 * len(rates) + 2) + [False]))


def run_loaders(bench: Bench, batch_size: int) -> Dict[str, object]:
    """The data pipeline's loader paths (``measure_loader_paths``) on the same images."""
    try:
        # In this process (no workers), in interleaved rounds: images per second per core, the
        # figure that decides how many cores a GPU needs. With workers the first batches are
        # prefetched while the warm-up runs, and a short timed window would flatter every path.
        rows = measure_loader_paths(bench.data_root, batch_size=batch_size, workers=0, batches=5 if bench.quick else 20)
    except AlexNetError as error:  # no dataset here, for example: the rest of the run stands
        return {"status": "failed", "reason": str(error)}
    return {"status": "ok", "batch_size": batch_size, "workers": 0, "rows": rows}


def run_end_to_end(bench: Bench, rows: List[Dict[str, object]], log) -> Dict[str, object]:
    """The grouped net's training step in the sweep's first runtime fed as ``alexnet train`` feeds
    it (``make_loader``, the augmentation on the device), beside the same step on a synthetic
    batch (its results row) and the loader with the augmentation alone: which one is the limit."""
    runtime, placement = bench.runtimes()[0], placements(bench.runtime.devices)[1]
    case = Case("grouped", placement, runtime, precision(runtime, placement), bench.batch_sizes[0], "train")
    reason = why_not_run(case)
    if reason:
        return {"status": "not run", "reason": reason}
    device, batch = case.devices[0], case.batch_size
    workers = default_workers() if runtime.workers is None else runtime.workers
    try:
        root = resolve_data_root(bench.data_root)
        dataset = open_dataset(root, "train")
        preprocess = Preprocess(stats=load_or_compute_stats(root, workers=workers).to(device))
    except AlexNetError as error:
        return {"status": "failed", "reason": str(error)}
    steps = min(bench.warmup + bench.steps * bench.repeats, len(dataset) // batch)
    if steps <= bench.warmup:
        return {"status": "not run", "reason": f"{root}: {len(dataset)} training images give fewer than "
                                               f"{bench.warmup + 1} batches of {batch}"}

    def images_per_s(step: Callable[[torch.Tensor, torch.Tensor], object]) -> float:
        loader = make_loader(dataset, batch, shuffle=True, seed=bench.seed, workers=workers, drop_last=True,
                             pin_memory=device.type == "cuda")
        reader = _Reader(loader, bench.seed, bench.warmup, device, preprocess, step)
        reader.read(steps - bench.warmup)
        return reader.images / reader.seconds

    log(f"end to end: {len(dataset)} images from {root}, batch {batch}, {workers} workers")
    runner = Runner(case, bench.seed)
    runner.model.train()
    amp = autocast_dtype(case.precision)
    training = images_per_s(lambda x, y: train_step(runner.run_model, x, y, runner.optimizer, amp_dtype=amp).loss)
    del runner
    loading = images_per_s(lambda x, y: None)  # the same batches and augmentation, no model
    synthetic = next((r for r in rows if r["status"] == "ok" and all(r[k] == v for k, v in case.as_dict().items())),
                     None)
    model_only = synthetic["images_per_s"]["median"] if synthetic else None
    return {"status": "ok", "data_root": str(root), "images": len(dataset), **case.as_dict(), "workers": workers,
            "timed_steps": steps - bench.warmup, "warmup_steps": bench.warmup,
            "train_images_per_s": training, "loader_images_per_s": loading,
            "synthetic_train_images_per_s": model_only,
            "fraction_of_synthetic": training / model_only if model_only else None,
            "verdict": limit(loading, model_only)}


def limit(loader_images_per_s: float, model_images_per_s: Optional[float]) -> str:
    """Which one limits training: the loader (with the augmentation) or the model's step."""
    if model_images_per_s is None:
        return "no synthetic-input row of the grouped net to compare with"
    if loader_images_per_s < model_images_per_s:
        return "the loader is the limit: it reads fewer images per second than the model trains on"
    return "the model is the limit: the loader reads faster than the model trains"
