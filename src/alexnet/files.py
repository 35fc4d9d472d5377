"""Where the project keeps things, and how every file it writes is written (atomically): the
data pipeline's statistics and packed datasets, and the training runs' files and checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


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


def write_atomically(path: PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it over ``path``: a
    reader sees the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.part"))  # created by write(): the umask applies
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
