"""Where charfast keeps its on-disk caches (token tables, tokenizers, token ids) and how
it names their files."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """CHARFAST_CACHE, else $XDG_CACHE_HOME/charfast, else ~/.cache/charfast."""
    env = os.environ.get("CHARFAST_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charfast"


def safe_filename(name: str) -> str:
    """`name` with every character other than letters, digits and -_. replaced by _."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
