"""Where the project keeps things, and how every file it writes is written (atomically): the
data pipeline's statistics and packed datasets, and the training runs' files and checkpoints."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from .errors import BusyError, ConfigError, StorageError

try:
    import fcntl
except ImportError:  # not POSIX: the lock below is then a no-op
    fcntl = None

PathLike = Union[str, os.PathLike]

#: What the operating system's refusals mean, in words, by errno (others: the system's own message).
REASONS = {
    errno.ENOSPC: "no space left on its device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for its file system",
    errno.EROFS: "its file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error (the disk may be failing)",
    errno.EISDIR: "it is a folder, where a file belongs",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ELOOP: "a symbolic link loops back on itself",
    errno.ENAMETOOLONG: "the name is too long",
}
#: Refusals that more room (or another disk) cures, and those that another place or its
#: permissions cure.
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)
#: Free bytes below which a failed write is taken to be the disk running full (torch's
#: checkpoint writer reports it only as "unexpected pos").
LOW_SPACE_BYTES = 64 << 20
PART = ".part"  # the suffix of every file being written (write_atomically)


def cache_dir() -> Path:
    """``$ALEXNET_CACHE`` if set, else ``~/.cache/alexnet``: the built-in dataset, statistics of
    read-only datasets and the throughput benchmark's packed copies live here."""
    return Path(os.environ.get("ALEXNET_CACHE") or Path.home() / ".cache" / "alexnet").expanduser()


def cache_entry(kind: str, root: PathLike, suffix: str = "") -> Path:
    """``CACHE/kind/<name>-<hash of the absolute path><suffix>``: where something derived from
    the dataset at ``root`` is kept when it cannot live beside it."""
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return cache_dir() / kind / f"{root.name}-{digest}{suffix}"


def describe_os_error(error: OSError) -> str:
    """``error`` in words: from its errno where it has one, else its own message."""
    return REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__


def storage_error(error: OSError, path: Optional[PathLike] = None, doing: Optional[str] = "writing") -> StorageError:
    """One line for an operating system's refusal: the path (the one the system names, unless
    it is a temporary ``.part`` file), what failed and why, and what to do."""
    named = error.filename if error.filename and not str(error.filename).endswith(PART) else path
    advice = ("free some space, or write elsewhere" if error.errno in FULL else
              "write elsewhere, or make it writable" if error.errno in DENIED else "")
    what = f"{doing} failed: " if doing else ""
    where = f"{named}: " if named else ""
    return StorageError(f"{where}{what}{describe_os_error(error)}" + (f"; {advice}" if advice else ""))


def write_atomically(path: PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it over ``path``: a
    reader sees the old file or the whole new one, never a half-written one. A refusal of
    the operating system (a full disk, a read-only folder, ...) is a ``StorageError`` naming
    ``path``, and the old file is left as it was."""
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}{PART}"))  # created by write(): the umask applies
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as error:
        raise storage_error(error, path) from None
    except RuntimeError:  # torch's zip writer: "unexpected pos ..." when the disk fills
        if _free_bytes(path.parent) < LOW_SPACE_BYTES:
            raise storage_error(OSError(errno.ENOSPC, "No space left on device"), path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def remove_stale_parts(folder: PathLike) -> int:
    """Delete the half-written files (``.NAME.<id>.part``) a killed writer left in ``folder`` and
    its subfolders; only the folder's one writer may call it. Returns the bytes freed."""
    freed = 0
    for part in Path(folder).rglob(f".*{PART}"):
        try:
            freed += part.stat().st_size
            part.unlink()
        except OSError:
            pass
    return freed


class FolderLock:
    """The one writer of a folder: an advisory lock on ``FOLDER/.alexnet.lock`` held while the
    process lives (the operating system drops it when the process ends, however it ends), with
    who holds it written inside for the next one to read."""

    NAME = ".alexnet.lock"

    def __init__(self, folder: PathLike, what: str = "run"):
        self.path = Path(folder) / self.NAME
        self.what = what
        self.handle = None

    def acquire(self) -> "FolderLock":
        """Take the lock, or a ``BusyError`` naming the process that holds it."""
        try:
            handle = open(self.path, "a+")
        except OSError as error:
            raise storage_error(error, self.path) from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise BusyError(f"{self.path.parent}: another process is writing this {self.what} ({holder}); wait "
                                f"for it to finish, or choose another folder") from None
        try:  # who holds it, for the next one to read; on a full disk the lock holds without it
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                         f"{' '.join(sys.argv)}"[:500])
            handle.flush()
        except OSError:
            pass
        self.handle = handle
        return self

    def release(self) -> None:
        """Drop the lock. The file stays (removing it would race with a process opening it),
        emptied: nobody holds it now."""
        if self.handle is not None:
            try:
                self.handle.truncate(0)
                self.handle.close()  # closing the file drops the lock
            except OSError:  # a read-only or full file system: the file is closed all the same
                pass
            self.handle = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def write_json(path: PathLike, data) -> Path:
    """A human-readable JSON file, written atomically."""
    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, default=json_default)
            handle.write("\n")
    return write_atomically(path, write)


def json_default(value):
    """JSON for the values runs record besides plain ones: tensor and numpy scalars, paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_new_file(path: PathLike, *, inputs: Iterable[PathLike] = (), overwrite: bool = False,
                   suffix: str = "", option: str = "--out") -> Path:
    """``path`` as a file a command may write once its work is done, checked before the work
    starts: not a folder, ``suffix`` its ending (where given), not one of the command's
    ``inputs`` (a file, or a folder the output may not go into), not an existing file unless
    ``overwrite``, and its folder there and writable. A ``ConfigError`` naming ``option``
    otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{option} {path}: give a name ending in {suffix}")
    for source in inputs:
        source = Path(source).expanduser()
        if source.is_dir() and path.resolve().is_relative_to(source.resolve()):
            raise ConfigError(f"{option} {path}: inside the input {source}, whose files are read; write it elsewhere")
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise ConfigError(f"{option} {path}: is the input {source}; write it elsewhere")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path}: exists; give --overwrite to replace it (overwrite=True from Python), "
                          f"or another name")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not is_writable_dir(folder):
        raise ConfigError(f"{option} {path}: cannot write into {folder} (read-only, or no permission)")
    return path


def is_writable_dir(folder: PathLike) -> bool:
    """Whether files can be created in ``folder`` (tried, not guessed from permission bits)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".alexnet-write-test.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def save_png(figure, path: PathLike) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed either way."""
    import matplotlib.pyplot as plt  # matplotlib only where a figure is drawn

    def write(tmp):
        figure.savefig(tmp, dpi=100, format="png")
    try:
        return write_atomically(path, write)
    finally:
        plt.close(figure)
