"""The operating system's errors while the data side writes (statistics, packed datasets), as
one ``DataError`` line naming the file and saying what to do: a full disk, a read-only or
forbidden destination.

``alexnet.files`` says what an errno means (``describe_os_error``) and turns the OSErrors
raised inside ``write_atomically`` into a ``StorageError``; ``writing`` lets any
``AlexNetError`` (that one included) through unchanged and adds the data side's own advice
(re-run prepare, set ALEXNET_CACHE) to what is written in place: the packed format's data
files and the statistics.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import AlexNetError, DataError
from ..files import DENIED, FULL, PART, describe_os_error, write_atomically

def write_error(path: Union[str, Path], error: OSError, full: str, denied: str) -> DataError:
    """The one line for ``error`` met while writing ``path``: the file (or folder) the system
    names, unless that is a temporary file of ``write_atomically``; why; and the advice
    ``full`` (no room) or ``denied`` (read-only, not allowed) that fits."""
    named = error.filename if error.filename and not str(error.filename).endswith(PART) else path
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

