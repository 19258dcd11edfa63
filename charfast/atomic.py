"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

The bytes go to a temp file beside the target, `.NAME.tmpPID`, which is renamed over the
target once it is on disk. A process killed mid-write leaves its temp file behind;
`remove_stale_temp_files` removes those of processes that are gone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")  # .NAME.tmpPID


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


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
    (those whose process no longer exists); returns what was removed."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file() and _process_is_gone(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
