"""The packed format: a dataset already in the paper's 256×256 form (§2), in a few large files.

``prepare(SRC, DST)`` reads a folder dataset once, on all cores, and writes::

    DST/packed.json             format, classes, image counts; written LAST: the finished marker
    DST/train.u8                raw: uint8 (N, 3, 256, 256), read through a memory map
    DST/train.jpg               jpeg: the images re-encoded (4:4:4), back to back
    DST/train.offsets.npy       jpeg: int64 (N + 1,), image i is bytes [offsets[i], offsets[i+1])
    DST/train.labels.npy        int64 (N,)
    DST/val.*                   the same for val
    DST/alexnet-stats/          the training split's statistics (``alexnet.data.stats``)

While it runs, ``DST/.prepare/`` holds the job and how far each split has got; data up to that
point is on disk, so an interrupted ``prepare`` continues where it stopped when run again.
A folder without ``packed.json`` is never opened as a dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AlexNetError, DataError
from ..files import FolderLock, describe_os_error, resolved, write_atomically, write_json
from ..progress import SILENT, Reporter
from .folders import LAYOUT, FolderDataset, check_split, is_folder_dataset
from .images import IMAGE_SIZE, decode_jpeg, encode_jpeg
from .loader import check_workers, cpu_cores, make_loader
from .stats import STATS_FOLDER, StatsAccumulator
from .storage import save_npy, write_all, writing


FORMATS = ("raw", "jpeg")
FORMAT_VERSION = 1
META = "packed.json"
WORK = ".prepare"
DEFAULT_QUALITY = 90
CHECKPOINT_SECONDS = 10.0
DATA_SUFFIX = {"raw": ".u8", "jpeg": ".jpg"}
IMAGE_BYTES = 3 * IMAGE_SIZE ** 2  # one raw image

#: What to do when prepare cannot write: the disk is full; the destination is read-only.
PACK_FULL = "free space and re-run prepare (it continues where it stopped), or pack into another folder"
PACK_DENIED = "make the destination writable, or pack into another folder"


def _writing(path: Path):
    """An OSError while prepare writes ``path``: one line, with prepare's advice."""
    return writing(path, PACK_FULL, PACK_DENIED)


def packed_state(root: Union[str, Path]) -> Optional[str]:
    """"finished", "partial" (prepare has not finished) or None (not a packed dataset)."""
    root = Path(root)
    if (root / META).is_file():
        return "finished"
    if (root / WORK).exists() or any((root / f"train{suffix}").exists() for suffix in DATA_SUFFIX.values()):
        return "partial"
    return None


def read_meta(root: Union[str, Path]) -> dict:
    root = Path(root)
    state = packed_state(root)
    if state == "partial":
        raise DataError(f"{root}: a half-written packed dataset (prepare did not finish); "
                        f"re-run alexnet prepare with the same SRC and this DST to complete it")
    if state is None:
        raise DataError(f"{root}: not a packed dataset (no {META})")
    try:
        meta = json.loads((root / META).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{root / META}: unreadable ({error})") from None
    if meta.get("version") != FORMAT_VERSION or meta.get("format") not in FORMATS:
        raise DataError(f"{root / META}: packed format version {meta.get('version')!r}, format "
                        f"{meta.get('format')!r}; this alexnet reads version {FORMAT_VERSION} (raw or jpeg): re-run prepare")
    return meta


def _load_array(path: Path) -> np.ndarray:
    """One of the packed dataset's .npy files (labels, offsets), or one line: a missing, cut
    short or foreign file."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        reason = describe_os_error(error) if isinstance(error, OSError) else f"not a whole .npy array: {error}"
        raise DataError(f"{path}: unreadable ({reason}); the packed dataset is damaged: re-run prepare with "
                        f"--overwrite") from None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{path}: holds a {array.dtype} array of shape {array.shape}, not a list of integers; the "
                        f"packed dataset is damaged: re-run prepare with --overwrite")
    return array


class PackedDataset(Dataset):
    """A split of a packed dataset: the same (uint8 (3, 256, 256), label) items as the folder
    reader gave ``prepare`` (raw: the same bytes; jpeg: after one re-encoding)."""

    def __init__(self, root: Union[str, Path], split: str, skip_bad: bool = False):
        self.root = Path(root)
        self.split = check_split(split)
        self.skip_bad = skip_bad  # packed images were read once already; kept for the loader
        meta = read_meta(self.root)
        self.format = meta["format"]
        try:
            self.classes = list(meta["classes"])
            self.image_size = int(meta["image_size"])
            self.count = int(meta["splits"][split]["images"])
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{self.root / META}: damaged ({type(error).__name__}: {error}); re-run prepare with "
                            f"--overwrite") from None
        self.labels = torch.from_numpy(_load_array(self.root / f"{split}.labels.npy"))
        self.data_path = self.root / f"{split}{DATA_SUFFIX[self.format]}"
        if self.format == "jpeg":
            self.offsets = _load_array(self.root / f"{split}.offsets.npy")
        expected = self.count * 3 * self.image_size ** 2 if self.format == "raw" else int(self.offsets[-1])
        size = self.data_path.stat().st_size if self.data_path.is_file() else -1
        if size != expected or len(self.labels) != self.count:
            raise DataError(f"{self.data_path}: {size} bytes and {len(self.labels)} labels, expected {expected} "
                            f"bytes and {self.count} labels; the packed dataset is damaged: re-run prepare with --overwrite")
        self.reads_batches = self.format == "raw"  # the loader may call read_batch
        self._data = None  # opened lazily, in each worker process

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None  # never pickle the memory map (spawned workers reopen it)
        return state

    def _open(self):
        if self._data is None:
            if self.format == "raw":
                shape = (self.count, 3, self.image_size, self.image_size)
                self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=shape)
            else:
                self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        return self._data

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        data = self._open()
        if self.format == "raw":
            return torch.from_numpy(np.array(data[index])), int(self.labels[index])
        return decode_jpeg(data[self.offsets[index]:self.offsets[index + 1]]), int(self.labels[index])

    def read_batch(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw only: the whole batch in one gather from the memory map."""
        index = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self._open()[index]), self.labels[torch.from_numpy(index)]

    def __repr__(self) -> str:
        return f"PackedDataset({str(self.root)!r}, {self.split!r}: {self.count} images, {self.format})"


# ---------------------------------------------------------------------------------------------
# prepare


def _job(src: Path, fmt: str, quality: int, classes) -> dict:
    """What an interrupted run must share with the next to continue it. Not --skip-bad (a run
    stopped by a bad image may go on skipping), not the file counts (the bad file may be
    removed); ``_write_split`` checks that the last file handled is still in its place."""
    return {"source": str(src.resolve()), "format": fmt, "quality": quality if fmt == "jpeg" else None,
            "classes": list(classes), "image_size": IMAGE_SIZE, "version": FORMAT_VERSION}


def _check_apart(src: Path, dst: Path):
    """Refuse a destination inside the source (what prepare writes into SRC/train/ would be read
    back as a class, and the packed dataset would sit inside the data it copies) or around it
    (--overwrite would delete next to the source), before anything is written."""
    source, destination = resolved(src, "SRC"), resolved(dst, "DST")
    if destination == Path(destination.anchor) or destination == Path.home().resolve():
        raise DataError(f"{dst}: a file system's root or the home folder; choose a folder of its own")
    if destination == source:
        raise DataError(f"{dst}: the destination must differ from the source")
    if source in destination.parents:
        raise DataError(f"{dst}: inside the source dataset {src}; choose a destination outside it")
    if destination in source.parents:
        raise DataError(f"{dst}: holds the source dataset {src}; choose a destination outside it")


def _check_destination(dst: Path, job: dict, overwrite: bool) -> bool:
    """Make ``dst`` ready for ``job``; True when an interrupted run of the same job continues."""
    state = packed_state(dst) if dst.exists() else None
    if dst.exists() and not dst.is_dir():
        raise DataError(f"{dst}: exists and is not a folder")
    if state == "finished" and not overwrite:
        raise DataError(f"{dst}: already a finished packed dataset; pass --overwrite to replace it")
    if state == "partial" and not overwrite:
        try:
            previous = json.loads((dst / WORK / "job.json").read_text())
        except (OSError, ValueError):
            previous = None
        if previous == job:
            return True
        raise DataError(f"{dst}: holds an unfinished prepare of a different source, format or quality; "
                        f"pass --overwrite to start again")
    if state is None and dst.exists() and any(not p.name.startswith(".") for p in dst.iterdir()):
        raise DataError(f"{dst}: exists, is not empty and is not a packed dataset; choose a new or empty folder")
    if state is not None:  # --overwrite: remove what prepare writes, nothing else
        for path in [dst / META, dst / WORK, dst / STATS_FOLDER] + \
                    [dst / f"{split}{suffix}" for split in ("train", "val")
                     for suffix in (".u8", ".jpg", ".offsets.npy", ".labels.npy")]:
            with _writing(path):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    return False


def describe(dst: Union[str, Path], meta: dict) -> str:
    """What ``prepare`` wrote, for people."""
    splits = meta["splits"]
    lines = [f"packed {splits['train']['images']} train + {splits['val']['images']} val images "
             f"({meta['format']}, {len(meta['classes'])} classes) into {dst}",
             f"statistics in {Path(dst) / meta['stats']}"]
    skipped = [message for split in splits.values() for message in split["skipped_files"]]
    if skipped:
        lines.append(f"skipped {len(skipped)} unreadable image(s):")
        lines += [f"  {message}" for message in skipped[:20]] + (["  ..."] if len(skipped) > 20 else [])
    entries = [message for split in splits.values() for message in split.get("skipped_entries", [])]
    if entries:  # split entries that might have been class folders (symlink loops, broken links)
        lines.append(f"left out {len(entries)} unreadable entr{'y' if len(entries) == 1 else 'ies'} of the splits:")
        lines += [f"  {message}" for message in entries]
    return "\n".join(lines)


@contextlib.contextmanager
def _uninterrupted():
    """Hold Ctrl-C back until the block is done, so a split's files and its saved state always
    describe the same images (only possible in the main thread; elsewhere, no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class _SplitWriter:
    """Appends one split's images, labels (and JPEG offsets) and saves how far it got.

    The data file is written with plain writes, never through a memory map: on a full disk a
    write to a mapped page kills the process with SIGBUS, without a word, where a write raises
    ENOSPC, which ``_writing`` turns into one line.
    """

    def __init__(self, dst: Path, split: str, fmt: str, quality: int, resume: bool):
        self.dst, self.split, self.format, self.quality = dst, split, fmt, quality
        self.data_path = dst / f"{split}{DATA_SUFFIX[fmt]}"
        self.state_path = dst / WORK / f"{split}.state.npz"
        self.stats = StatsAccumulator() if split == "train" else None
        self.done, self.last_source, self.skipped = 0, "", []  # source images handled so far
        self.labels, self.offsets = [], [0]
        if resume and self.state_path.exists():
            with np.load(self.state_path) as state:
                self.done, self.last_source = int(state["done"]), str(state["last_source"])
                self.skipped = [str(message) for message in state["skipped"]]
                self.labels, self.offsets = state["labels"].tolist(), state["offsets"].tolist()
                if self.stats is not None:
                    self.stats.load_state(state)
        append = resume and self.data_path.exists()
        # what the saved state covers; bytes after it (a write cut short) are dropped
        end = len(self.labels) * IMAGE_BYTES if fmt == "raw" else self.offsets[-1]
        with _writing(self.data_path):
            self.file = open(self.data_path, "r+b" if append else "w+b", buffering=0)
            self.file.truncate(end)
            self.file.seek(end)
        self.encoder = ThreadPoolExecutor(max(1, cpu_cores())) if fmt == "jpeg" else None  # PIL encodes without the GIL

    def add(self, images: torch.Tensor, labels: torch.Tensor, done: int, last_source: str, skipped):
        pixels = np.ascontiguousarray(images.numpy())
        encoded = list(self.encoder.map(encode_jpeg, pixels, [self.quality] * len(pixels))) \
            if self.format == "jpeg" else None
        with _uninterrupted():
            with _writing(self.data_path):  # nothing below is counted if this fails
                write_all(self.file, pixels if self.format == "raw" else b"".join(encoded))
            if self.format == "jpeg":
                for data in encoded:
                    self.offsets.append(self.offsets[-1] + len(data))
            if self.stats is not None:
                self.stats.add(images)
            self.labels.extend(labels.tolist())
            self.advance(done, last_source, skipped)

    def advance(self, done: int, last_source: str, skipped):
        self.done, self.last_source, self.skipped = done, last_source, list(skipped)

    def save_state(self):
        """Flush the data, then record how far it goes (atomically: a crash keeps the old state)."""
        with _writing(self.data_path):
            os.fsync(self.file.fileno())
        state = dict(done=self.done, labels=np.asarray(self.labels, dtype=np.int64),
                     offsets=np.asarray(self.offsets, dtype=np.int64), last_source=self.last_source,
                     skipped=np.asarray(self.skipped, dtype=str), **(self.stats.state() if self.stats else {}))

        def write(tmp):
            with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to a name
                np.savez(handle, **state)
        with _writing(self.state_path):
            write_atomically(self.state_path, write)

    def finish(self) -> dict:
        self.close()
        index = {"labels": self.labels, **({"offsets": self.offsets} if self.format == "jpeg" else {})}
        for name, values in index.items():
            path = self.dst / f"{self.split}.{name}.npy"
            with _writing(path):
                save_npy(path, np.asarray(values, dtype=np.int64))
        return {"images": len(self.labels), "skipped": len(self.skipped), "skipped_files": self.skipped}

    def close(self):
        if not self.file.closed:
            self.file.close()
        if self.encoder is not None:
            self.encoder.shutdown()


def _write_split(writer: _SplitWriter, dataset: FolderDataset, workers: int, batch_size: int, reporter: Reporter):
    """Read the split's remaining images in order and hand them to ``writer``."""
    start, skipped_before = writer.done, list(writer.skipped)
    if start > len(dataset) or (start and dataset.samples[start - 1][0] != writer.last_source):
        raise DataError(f"{dataset.root / dataset.split}: its files changed since prepare stopped; "
                        f"pass --overwrite to start again")
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, indices=range(start, len(dataset)))

    def position():
        done = start + loader.consumed
        return done, dataset.samples[done - 1][0] if done else "", skipped_before + loader.skipped_files

    bar = reporter.bar(len(dataset), f"prepare {dataset.split}", initial=start, unit="img")
    saved = time.monotonic()
    try:
        for images, labels in loader:
            writer.add(images, labels, *position())
            bar.update(writer.done - bar.n)
            if time.monotonic() - saved > CHECKPOINT_SECONDS:
                writer.save_state()
                saved = time.monotonic()
        writer.advance(*position())  # bad images after the last good batch
        bar.update(writer.done - bar.n)
    except BaseException:
        bar.close()
        # Whatever stopped us, the next run continues from here. If even this fails (the disk
        # that stopped us is full), the state saved before stays, and so does the first error.
        with contextlib.suppress(OSError, AlexNetError):
            writer.save_state()
        raise
    bar.close()
    writer.save_state()


def prepare(src: Union[str, Path], dst: Union[str, Path], *, format: str = "raw", quality: int = DEFAULT_QUALITY,
            workers: Optional[int] = None, skip_bad: bool = False, overwrite: bool = False,
            reporter: Reporter = SILENT, batch_size: int = 32) -> Dict:
    """Convert the folder dataset ``src`` into the packed format in ``dst`` and return the
    metadata written to ``dst/packed.json``. Re-running after an interruption continues;
    ``workers=None`` reads with every core."""
    src, dst = Path(src), Path(dst)
    if format not in FORMATS:
        raise DataError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if not 1 <= int(quality) <= 100:
        raise DataError(f"quality must be between 1 and 100; got {quality}")
    if not src.exists():
        raise DataError(f"{src}: no such folder")
    if packed_state(src) is not None or not is_folder_dataset(src):
        raise DataError(f"{src}: not a folder dataset ({LAYOUT})")
    check_workers(workers)
    _check_apart(src, dst)
    sources = {split: FolderDataset(src, split, skip_bad=skip_bad) for split in ("train", "val")}
    job = _job(src, format, int(quality), sources["train"].classes)
    with _writing(dst):
        dst.mkdir(parents=True, exist_ok=True)
    with FolderLock(dst, "packed dataset"):  # one prepare at a time into a destination
        return _prepare_locked(dst, job, sources, overwrite, (format, int(quality)),
                               cpu_cores() if workers is None else workers, reporter, batch_size)


def _prepare_locked(dst: Path, job: dict, sources: dict, overwrite: bool, encoding: tuple, workers: int,
                    reporter: Reporter, batch_size: int) -> Dict:
    """``prepare`` once it is the destination's one writer."""
    resume = _check_destination(dst, job, overwrite)
    with _writing(dst / WORK):
        (dst / WORK).mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json(dst / WORK / "job.json", job)

    splits, stats = {}, None
    for split, dataset in sources.items():
        writer = _SplitWriter(dst, split, *encoding, resume)
        try:
            _write_split(writer, dataset, workers, batch_size, reporter)
            splits[split] = {**writer.finish(), "skipped_entries": dataset.skipped_entries}
            if writer.stats is not None:
                stats = writer.stats.result(dataset_size=splits[split]["images"])
        finally:
            writer.close()
    return _write_meta(dst, job, splits, stats)


def _write_meta(dst: Path, job: dict, splits: dict, stats) -> dict:
    """The statistics, then ``packed.json``: from then on the dataset is finished."""
    meta = {"version": FORMAT_VERSION, "format": job["format"], "quality": job["quality"], "image_size": IMAGE_SIZE,
            "layout": "uint8 (N, 3, H, W) RGB" if job["format"] == "raw" else "JPEG 4:4:4 with int64 offsets",
            "classes": job["classes"], "source": job["source"], "splits": splits, "stats": STATS_FOLDER}
    with _writing(dst / STATS_FOLDER):
        stats.save(dst / STATS_FOLDER)
    with _writing(dst / META):
        write_json(dst / META, meta)  # last: from now on the dataset is finished
    shutil.rmtree(dst / WORK, ignore_errors=True)
    return meta
