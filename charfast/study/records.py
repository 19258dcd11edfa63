"""The study's records: what every stage wrote, what it was built from, and the check that
decides whether a rerun may reuse it.

A record is a JSON file beside a stage's output: the stage's result fields, "built_from"
(everything the result depends on: settings, the digests of the weights, test set and
code it read), "files" (the SHA-256 of each file the stage wrote beside it, e.g. kept
weights) and "sha256", the digest of all of that, so a record changed after it was
written (a flipped digit still parses) is found like a damaged file. A rerun reuses a
record only when it is intact, was built from the same inputs and every file it lists
still has the bytes it was written with; a record or file that is missing or damaged (a
flipped bit, a torn copy) is named in one line and its stage runs again. Readers check a
record (`read_record`) and a file against the record of the stage that wrote it
(`verified`).

The files' digests are of their bytes as written: torch.save writes a fresh serialization
id into every file, so the same weights written by two runs differ there (what a stage was
built from names weights by the digest of their values instead, weights_digest).

Records written before "files" existed are verified the only way left, by loading their
weights (and, where the record holds one, comparing the weights' digest), then adopted:
their file digests are recorded from then on.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from charfast.atomic import atomic_write
from charfast.gpt.failures import RunFailed

RECORD_DIGEST = "sha256"  # a record's digest of the rest of its content


def read_json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, value) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(value, indent=1) + "\n").encode("utf-8"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(path: Path) -> str:
    """SHA-256 of the weights in a checkpoint (its "model") or a saved state dict: names,
    dtypes, shapes and values. Not the file's bytes: torch.save writes a fresh serialization
    id into every file, so the same weights saved by two processes are two files."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return model_digest(state.get("model", state))


def model_digest(state: dict) -> str:
    """weights_digest of a state dict already in memory (a checkpoint's "model")."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()


def write_record(path: Path, fields: dict, built_from: dict, files: Sequence[Path] = ()) -> None:
    """The record of a stage that wrote `files` (in `path`'s folder) from `built_from`:
    written last, so a record means its stage finished. It carries the SHA-256 of its own
    content ("sha256"), so a changed digit in it is found too."""
    record = {**fields, "built_from": built_from, "files": {file.name: file_sha256(file) for file in files}}
    write_json(path, {**record, RECORD_DIGEST: _content_sha256(record)})


def read_record(path: Path) -> dict:
    """The record at `path`, checked against the digest it was written with; a RunFailed
    naming it when it is missing, unreadable or changed since."""
    record = read_json(path)
    if not isinstance(record, dict) or not _intact(record):
        raise RunFailed(f"{path} is missing, unreadable or changed since its stage wrote it; run the study again")
    return record


def _content_sha256(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _intact(record: dict) -> bool:
    """Whether a record still has the content it was written with (one written before records
    carried their digest: nothing to check)."""
    written = record.get(RECORD_DIGEST)
    return written is None or written == _content_sha256({k: v for k, v in record.items() if k != RECORD_DIGEST})


def reusable(path: Path, built_from: dict, files: Sequence[Path] | None = None) -> dict | None:
    """The record at `path` when its stage may be reused: built from `built_from`, with each
    of `files` (default: every file the record lists) as it was written. Else None, after
    one line naming a file that is missing or damaged (the stage runs again)."""
    record = read_json(path)
    if isinstance(record, dict) and not _intact(record):
        print(f"charfast.study: {path} is damaged (its content differs from its digest); the stage runs again")
        return None
    if not isinstance(record, dict) or record.get("built_from") != built_from:
        return None
    digests = record.get("files")
    if files is None:
        if not isinstance(digests, dict):
            return None
        files = [path.parent / name for name in digests]
    for file in files:
        if not file.is_file():
            print(f"charfast.study: {file} is missing; the stage that wrote it runs again")
            return None
        if digests is None:
            if not _legacy_weights_intact(file, record):
                return None
        elif digests.get(file.name) != file_sha256(file):
            print(f"charfast.study: {file} is damaged (its SHA-256 differs from its record's); the stage runs again")
            return None
    if digests is None and files:  # verified by loading: its digests are recorded from now on
        write_record(path, {k: v for k, v in record.items() if k not in ("built_from", "files")}, built_from, files)
        record = read_json(path)
    return record


def _legacy_weights_intact(file: Path, record: dict) -> bool:
    try:
        digest = weights_digest(file)
    except Exception as err:  # noqa: BLE001 - whatever torch.load makes of a torn file
        print(f"charfast.study: {file} is damaged ({type(err).__name__}); the stage runs again")
        return False
    if record.get("weights_sha256", digest) != digest:
        print(f"charfast.study: {file} is damaged (its weights differ from its record's); the stage runs again")
        return False
    return True


def verified(file: Path, record_path: Path) -> Path:
    """`file` once it has the bytes the record at `record_path` (of the stage that wrote it)
    lists; a RunFailed naming it otherwise (a rerun writes it again)."""
    digests = read_record(record_path).get("files")
    if digests is not None and (not file.is_file() or digests.get(file.name) != file_sha256(file)):
        raise RunFailed(f"{file} is missing or damaged since {record_path} recorded it; run the study again")
    return file


def source_digest(module: str, package: str = "charfast") -> str:
    """SHA-256 of the source of `module` and of every module of `package` it imports,
    directly or not (source_modules): the code that shapes what `module` makes."""
    digest = hashlib.sha256()
    for name, path in sorted(source_modules(module, package).items()):
        source = path.read_bytes()
        digest.update(f"{name}|{len(source)}|".encode() + source)
    return digest.hexdigest()


def source_modules(module: str, package: str = "charfast") -> dict[str, Path]:
    """{name: source file} of `module` and of every module of `package` it imports, directly
    or not, found by reading the imports rather than kept in a list by hand."""
    found, queue = {}, [module]
    seen = set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = _module_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        found[name] = Path(spec.origin)
        tree = ast.parse(found[name].read_bytes())
        here = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
        queue += [n for n in _imported(tree, here) if n == package or n.startswith(package + ".")]
    return found


def _imported(tree: ast.Module, here: str) -> list[str]:
    """The modules an AST of package `here` imports (absolute names; `from a import b` gives
    a.b when b is a module, else a, whose code defines b)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                names.append(f"{base}.{alias.name}" if _module_spec(f"{base}.{alias.name}") else base)
    return [n for n in names if n]


def _module_spec(name: str):
    """The import spec of module `name`; None when `name` is not a module (e.g. a name
    defined inside one)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
