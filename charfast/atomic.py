"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

The bytes go to a temp file beside the target, `.NAME.tmp-HOST-PID`, which is renamed
over the target once it is on disk. A process killed mid-write leaves its temp file
behind; `remove_stale_temp_files` removes those of this host's processes that are gone (on
a filesystem shared by several machines, another host's PID says nothing here).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_TEMP_NAME = re.compile(r"^\..+\.tmp-(.+)-(\d+)$")  # .NAME.tmp-HOST-PID


def this_host() -> str:
    """This machine's name as temp files and lock files record it (no "-" at its ends)."""
    return socket.gethostname().strip("-") or "localhost"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{this_host()}-{os.getpid()}")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside `path` for binary writing; on a clean exit, flush it to disk
    and rename it over `path`. On an exception the temp file is removed and `path` is
    untouched. An OSError raised while writing names `path`."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename publishes them
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err  # e.g. a full disk found at flush
    finally:
        tmp.unlink(missing_ok=True)


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files atomic_write left in `folder` when its process was killed
    (those of this host whose process no longer exists); returns what was removed."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _TEMP_NAME.match(entry.name)
        if match and match.group(1) == this_host() and entry.is_file() and _process_is_gone(int(match.group(2))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
