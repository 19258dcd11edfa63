"""Where charfast keeps its on-disk caches (token tables, tokenizers, token ids), how it
names their files, and how it writes and checks them.

Every cache file starts with a fixed-size header that records what it must hold: the
key it was built for (a digest of everything its content depends on), the payload's byte
count and SHA-256. A read checks all three, so a file cut short (even at a line end, where
the format would still parse), altered, left by another version or holding another key's
content under this key's name is never trusted: the caller rebuilds it, and one line says
so.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from charfast.atomic import atomic_write

HEADER_SIZE = 256  # bytes: the payload starts here (a multiple of every dtype's size, for np.memmap)
_MAGIC = "charfast-cache-v2"


def default_cache_dir() -> Path:
    """CHARFAST_CACHE, else $XDG_CACHE_HOME/charfast, else ~/.cache/charfast."""
    env = os.environ.get("CHARFAST_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charfast"


def safe_filename(name: str) -> str:
    """`name` with every character other than letters, digits and -_. replaced by _."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _header(key: str, size: int, sha256: str) -> bytes:
    text = f"{_MAGIC} key={_key_digest(key)} bytes={size} sha256={sha256}\n".encode("ascii")
    return text.ljust(HEADER_SIZE, b" ")


def write_checked(path: str | os.PathLike, chunks: Iterable[bytes], key: str) -> None:
    """Write the concatenated `chunks` to `path` atomically, behind a header of `key` (what
    they were built from), their byte count and SHA-256. An OSError names `path` (the caller
    decides whether a cache that cannot be written matters)."""
    with checked_writer(path, key) as write:
        for chunk in chunks:
            write(chunk)


@contextmanager
def checked_writer(path: str | os.PathLike, key: str) -> Iterator[Callable[[bytes], None]]:
    """A function that appends bytes to the payload of `path`, which is published (atomically,
    behind its header, as write_checked writes it) when the block exits cleanly: several
    files can be filled side by side from one stream."""
    digest, size = hashlib.sha256(), 0
    with atomic_write(path) as f:
        f.write(_header(key, 0, "0" * 64))  # a placeholder of the same size, filled in below

        def write(chunk: bytes) -> None:
            nonlocal size
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)

        yield write
        f.seek(0)
        f.write(_header(key, size, digest.hexdigest()))


def checked_payload_offset(path: str | os.PathLike, key: str) -> int | None:
    """HEADER_SIZE when `path` holds exactly the payload its header records, built for `key`;
    None when it is missing, or (with one line saying so, for the caller to rebuild it) when
    it is not."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            why = _why_not(f, os.fstat(f.fileno()).st_size, key)
    except FileNotFoundError:
        return None
    except OSError as err:
        why = f"cannot be read ({err.strerror})"
    if why is None:
        return HEADER_SIZE
    print(f"note: cache file {path} {why}; rebuilding it", file=sys.stderr)  # stdout may be a sample's text
    return None


def read_checked(path: str | os.PathLike, key: str) -> bytes | None:
    """The payload of `path` when it checks out for `key` (see checked_payload_offset), else None."""
    offset = checked_payload_offset(path, key)
    if offset is None:
        return None
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def _why_not(f, file_size: int, key: str) -> str | None:
    """None when the open file `f` holds what its header records, for `key`; else why not,
    in words."""
    fields = f.read(HEADER_SIZE).decode("ascii", "replace").split()
    values = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
    if not fields or fields[0] != _MAGIC or not values.get("bytes", "").isdigit() or "sha256" not in values:
        return "has no integrity header (damaged, or written by another version)"
    if values.get("key") != _key_digest(key):
        return "holds the content of another key (copied or renamed from another cache entry)"
    expected = int(values["bytes"])
    if file_size - HEADER_SIZE != expected:
        return f"holds {file_size - HEADER_SIZE} bytes where its header records {expected} (cut short or damaged)"
    digest = hashlib.sha256()
    while block := f.read(1 << 20):
        digest.update(block)
    if digest.hexdigest() != values["sha256"]:
        return "does not match the SHA-256 its header records (damaged)"
    return None
