"""Where the project keeps things, and how every file it writes is written (atomically): the
data pipeline's statistics and packed datasets, and the training runs' files and checkpoints."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import torch

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
PART = ".part"  # the suffix of every file being written (write_atomically): .NAME.<pid>-<id>.part


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
    the operating system (a full disk, a size limit, a read-only folder, ...) is a
    ``StorageError`` naming ``path``, and the old file is left as it was. What a killed writer
    of the same path left half-written goes first."""
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}{PART}"))  # the umask applies
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_parts(path.parent.glob(f".{_glob_escape(path.name)}.*{PART}"), dead_only=True)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as error:
        raise storage_error(error, path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class _WholeWrites(io.RawIOBase):
    """A file torch.save writes into through Python, so that the operating system's refusal is
    kept: torch turns an exception raised in a write into "unexpected pos"."""

    def __init__(self, fd: int):
        self.fd, self.error = fd, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as error:  # a full disk, a size limit (EFBIG), an I/O error
            self.error = self.error or error
            raise
        return done


def save_torch(path: PathLike, payload) -> Path:
    """``torch.save(payload)`` to ``path``, atomically (``write_atomically``), with the operating
    system's refusal said as such, whatever torch's zip writer makes of it."""
    def write(tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        sink = _WholeWrites(fd)
        try:
            torch.save(payload, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise
        finally:
            os.close(fd)
    return write_atomically(path, write)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _writer_alive(part: Path) -> bool:
    """Whether the process that is writing ``part`` (its pid in the name) still runs."""
    head = part.name[:-len(PART)].rsplit(".", 1)[-1]
    pid = head.split("-", 1)[0]
    if not pid.isdigit():
        return False  # written before the pid was in the name: a writer long gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        return True
    return int(pid) != os.getpid()


def _remove_parts(parts: Iterable[Path], dead_only: bool) -> int:
    freed = 0
    for part in parts:
        if dead_only and _writer_alive(part):
            continue
        try:
            freed += part.stat().st_size
            part.unlink()
        except OSError:
            pass
    return freed


def remove_stale_parts(folder: PathLike) -> int:
    """Delete the half-written files (``.NAME.<id>.part``) a killed writer left in ``folder`` and
    its subfolders; only the folder's one writer may call it. Returns the bytes freed."""
    return _remove_parts(Path(folder).rglob(f".*{PART}"), dead_only=False)


def resolved(path: PathLike, option: str) -> Path:
    """``path`` with every symbolic link followed; a link that loops is one line naming it."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as error:  # "Symlink loop" (RuntimeError before Python 3.13)
        loop = OSError(errno.ELOOP, str(error))
        raise storage_error(loop, f"{option} {path}", doing=None) from None


def check_output(path: PathLike, option: str, *, folder: bool = False, inputs: Iterable[PathLike] = (),
                 overwrite: bool = False, ours: Optional[Callable[[Path], bool]] = None) -> Path:
    """The rule every writer keeps, checked before any work: ``path`` is new, an empty folder,
    or something this package wrote (``ours``) replaced because ``overwrite`` says so; never
    an input of the same command (nor inside one's checkpoints, nor holding one), never a
    file system's root or the home folder itself. One line naming ``option`` otherwise.
    Returns the path as given (expanded)."""
    path = Path(path).expanduser()
    real = resolved(path, option)
    if real == Path(real.anchor) or real == Path.home().resolve():
        where = "the root of the file system" if real == Path(real.anchor) else "your home folder"
        raise ConfigError(f"{option} {path}: is {where}; give a folder of its own")
    for given in inputs:
        source = resolved(given, "input")
        run_folder = source.is_dir() and (source / "checkpoints").is_dir()  # a run's folder takes new files
        inside_checkpoints = (run_folder and real.is_relative_to(source / "checkpoints")) or \
            (source.parent.name == "checkpoints" and real.parent == source.parent)
        inside = source.is_dir() and real.is_relative_to(source) and not run_folder
        if real == source or inside_checkpoints or inside or (folder and source.is_relative_to(real)):
            where = "inside" if inside or inside_checkpoints else "over"
            raise ConfigError(f"{option} {path}: would write {where} this command's own input {given}; give "
                              f"another path")
    if not path.exists() and not path.is_symlink():
        return path
    if folder:
        if not path.is_dir():
            raise ConfigError(f"{option} {path}: exists and is not a folder")
        if not _holds_files(path):
            return path
        theirs, mine = "holds files alexnet did not write", "holds alexnet's earlier output"
    else:
        if path.is_dir():
            raise ConfigError(f"{option} {path}: is a folder; give a file name such as {path / 'out'}")
        theirs, mine = "is a file alexnet did not write", "is alexnet's earlier output"
    if ours is None or not ours(path):
        raise ConfigError(f"{option} {path}: {theirs}; not replaced (give a new path"
                          f"{' or an empty folder' if folder else ''})")
    if not overwrite:
        raise ConfigError(f"{option} {path}: {mine}; use --overwrite to replace it")
    return path


def _holds_files(folder: Path) -> bool:
    """Anything in ``folder`` but a lock and half-written files."""
    return any(entry.name != FolderLock.NAME and not entry.name.endswith(PART) for entry in folder.iterdir())


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
                   suffix: str = "", option: str = "--out", ours: Optional[Callable[[Path], bool]] = None) -> Path:
    """``check_output`` for a file a command writes once its work is done, checked before the
    work starts, with its ending (``suffix``, where given) and its folder (there, writable):
    a ``ConfigError`` naming ``option`` otherwise. ``ours``: how an earlier output of the
    command is recognised (the only file ``overwrite`` replaces)."""
    path = Path(path).expanduser()
    if suffix and path.suffix.lower() != suffix and not path.is_dir():
        raise ConfigError(f"{option} {path}: give a name ending in {suffix}")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not is_writable_dir(folder):
        raise ConfigError(f"{option} {path}: cannot write into {folder} (read-only, or no permission)")
    return check_output(path, option, inputs=[source for source in inputs if source is not None],
                        overwrite=overwrite, ours=ours)


def is_writable_dir(folder: PathLike) -> bool:
    """Whether files can be created in ``folder`` (tried, not guessed from permission bits)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".alexnet-write-test.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


#: The Software text chunk of every PNG this package draws: how an output is known to be its own.
PNG_SOFTWARE = "alexnet"


def save_png(figure, path: PathLike) -> Path:
    """A matplotlib figure as a PNG, written atomically and signed (``PNG_SOFTWARE``); the figure
    is closed either way."""
    import matplotlib.pyplot as plt  # matplotlib only where a figure is drawn

    def write(tmp):
        figure.savefig(tmp, dpi=100, format="png", metadata={"Software": f"{PNG_SOFTWARE} (matplotlib)"})
    try:
        return write_atomically(path, write)
    finally:
        plt.close(figure)
