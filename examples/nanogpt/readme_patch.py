"""The lines README.md adds to nanoGPT's model.py, as a patch: apply them to a nanoGPT
checkout, or remove them from a file that has them.

    python examples/nanogpt/readme_patch.py path/to/nanoGPT/model.py            # apply, in place
    python examples/nanogpt/readme_patch.py --remove examples/nanogpt/model.py  # print nanoGPT's

The patch is README.md's ```diff block under "nanoGPT": hunks headed by `@@ ... @@`, each
line ` ` (context), `-` (nanoGPT's) or `+` (charfast's). A hunk applies where its context
and `-` lines stand, once, in this order; anything else is an error that names the hunk.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_DIFF_BLOCK = re.compile(r"```diff\n(.*?)```", re.DOTALL)


def readme_hunks(readme: Path = README) -> list[tuple[str, list[str], list[str]]]:
    """[(header, nanoGPT's lines, charfast's lines)] of the README's nanoGPT diff."""
    blocks = [block for block in _DIFF_BLOCK.findall(readme.read_text(encoding="utf-8")) if "nanoGPT" in block]
    if len(blocks) != 1:
        raise ValueError(f"{readme}: expected one ```diff block for nanoGPT, found {len(blocks)}")
    hunks = []
    for line in blocks[0].splitlines():
        if line.startswith("@@"):
            hunks.append((line, [], []))
        elif hunks and line[:1] in (" ", "-", "+", ""):
            header, before, after = hunks[-1]
            text = line[1:]
            if line[:1] in (" ", "", "-"):
                before.append(text)
            if line[:1] in (" ", "", "+"):
                after.append(text)
        elif line.strip():
            raise ValueError(f"{readme}: a nanoGPT diff line outside a hunk: {line!r}")
    return hunks


def patch(source: str, remove: bool = False, readme: Path = README) -> str:
    """`source` with the README's lines added (or, with remove, taken out again)."""
    lines = source.splitlines()
    for header, before, after in readme_hunks(readme):
        find, put = (after, before) if remove else (before, after)
        starts = [i for i in range(len(lines) - len(find) + 1) if lines[i : i + len(find)] == find]
        if len(starts) != 1:
            raise ValueError(f"hunk {header!r}: its lines stand {len(starts)} times in the file, expected once")
        lines[starts[0] : starts[0] + len(find)] = put
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="nanoGPT's model.py")
    parser.add_argument("--remove", action="store_true", help="take the lines out and print the result")
    args = parser.parse_args(argv)
    result = patch(args.model.read_text(encoding="utf-8"), remove=args.remove)
    if args.remove:
        sys.stdout.write(result)
    else:
        args.model.write_text(result, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
