"""The operating system's errors while the data side writes (statistics, packed datasets), as
one ``DataError`` line naming the file and saying what to do: a full disk, a read-only or
forbidden destination.

A local stand-in: ``alexnet.files.write_atomically`` is to turn the OSErrors raised while it
writes into a general ``StorageError``. ``writing`` lets any ``AlexNetError`` (that one
included) through unchanged, so once it does, this is needed only around the packed format's
own data files, which are appended to in place rather than written atomically.
"""

from __future__ import annotations

import contextlib
import errno
import io
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import AlexNetError, DataError
from ..files import write_atomically

#: What the errors a write meets mean, in words (others: the system's own message).
REASONS = {
    errno.ENOSPC: "no space left on its device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for its file system",
    errno.EROFS: "its file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error (the disk may be failing)",
}
#: Errors that more room (or another disk) cures; errors that another place or its permissions cure.
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


def describe_os_error(error: OSError) -> str:
    """``error`` in words: from its errno where it has one, else its own message."""
    return REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__


def write_error(path: Union[str, Path], error: OSError, full: str, denied: str) -> DataError:
    """The one line for ``error`` met while writing ``path``: the file (or folder) the system
    names, unless that is a temporary file of ``write_atomically``; why; and the advice
    ``full`` (no room) or ``denied`` (read-only, not allowed) that fits."""
    named = error.filename if error.filename and not str(error.filename).endswith(".part") else path
    advice = full if error.errno in FULL else denied if error.errno in DENIED else ""
    return DataError(f"{named}: cannot write ({describe_os_error(error)})" + (f"; {advice}" if advice else ""))


@contextlib.contextmanager
def writing(path: Union[str, Path], full: str, denied: str):
    """Any OSError raised in the block becomes ``write_error(path, ...)``; an ``AlexNetError``
    (already one line) passes through."""
    try:
        yield
    except AlexNetError:
        raise
    except OSError as error:
        raise write_error(path, error, full, denied) from None


def write_all(handle, data) -> None:
    """All of ``data`` (bytes or a contiguous array) at ``handle``'s position. An unbuffered
    file may take less than it is given; a full disk is then an OSError with its errno."""
    view = memoryview(data).cast("B")
    while len(view):
        view = view[handle.write(view):]


def save_npy(path: Union[str, Path], array: np.ndarray) -> Path:
    """``np.save`` of ``array`` to ``path``, atomically. Through Python's own write: numpy
    writes a real file with fwrite, whose short write on a full disk is an OSError without an
    errno ("196608 requested and 78816 written"), which could not say what happened."""
    buffer = io.BytesIO()
    np.save(buffer, array)

    def write(tmp):
        with open(tmp, "wb", buffering=0) as handle:
            write_all(handle, buffer.getbuffer())
    return write_atomically(path, write)

