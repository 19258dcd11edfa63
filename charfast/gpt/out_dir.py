"""A training run's --out-dir: checked before any expensive work, held with an exclusive
lock for the run's lifetime, and cleaned of what a killed run left there.

The lock is an flock on OUT_DIR/.lock, which also holds the holder as HOST:PID. The
operating system releases it when its process ends, however it ends: a second run on the
same folder is refused while the first lives, and a killed run's lock is simply taken
over. A filesystem that refuses flock (some network filesystems: ENOLCK, ENOSYS,
EOPNOTSUPP) leaves the folder unlocked, and one line says so.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from charfast.atomic import remove_stale_temp_files, this_host

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked against each other
    fcntl = None

LOCK_NAME = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}  # flock refused by the filesystem


class OutDirInUse(ValueError):
    """Another live run holds the folder."""


@contextmanager
def claim_out_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Create `path` if needed and hold its lock until the block ends; a folder it created
    that holds nothing but the lock then (a run that failed before writing anything) is
    removed. A ValueError when it is not a folder or another run holds it; an OSError
    (naming the path) when it cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out-dir {path} exists and is not a folder")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(path) as held:
            yield held
    finally:
        if created and [entry.name for entry in path.iterdir()] == [LOCK_NAME]:
            (path / LOCK_NAME).unlink()
            path.rmdir()


@contextmanager
def _locked(path: Path) -> Iterator[Path]:
    with open(path / LOCK_NAME, "a+", encoding="ascii") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutDirInUse(
                    f"--out-dir {path} is in use by another run ({_holder(lock) or 'unknown'}); "
                    "wait for it to finish or choose another --out-dir"
                ) from None
            except OSError as err:
                if err.errno not in _NO_LOCKS:
                    raise
                print(
                    f"note: --out-dir {path}: its filesystem refuses locks ({os.strerror(err.errno)}); "
                    "running unlocked, so make sure no other run uses this folder"
                )
        killed = _holder(lock)  # a holder left in the file: its run ended without releasing it
        lock.seek(0)
        lock.truncate()
        lock.write(f"{this_host()}:{os.getpid()}")
        lock.flush()
        removed = remove_stale_temp_files(path)
        if killed or removed:
            print(
                f"note: --out-dir {path}: took over from a run that did not finish ({killed or 'unknown'})"
                + (f"; removed {len(removed)} temp file(s) it left" if removed else "")
            )
        try:
            yield path
        finally:
            lock.seek(0)
            lock.truncate()  # an empty lock file: the last run finished cleanly


def _holder(lock) -> str:
    lock.seek(0)
    return lock.read().strip()
