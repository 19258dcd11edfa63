"""Where a corpus's documents come from, read one at a time: the embedded plays, a text
file, or a folder of text, jsonl and parquet files. A corpus is a list of pieces, runs of
consecutive documents that are read, digested and tokenized together (a piece is one
token shard in the cache); no piece ever holds more than one document's text at once.

Documents and their names:
- a text file in a folder: one document, named by its path under the folder;
- a text file named alone: cut at line ends into CHUNKS_PER_FILE documents, "NAME:i";
- a jsonl file: one document per line that is not blank, "PATH:LINE" (1-based), its text
  the line's string field (--text-field);
- a parquet file: one document per row, "PATH:ROW" (0-based), its text the string column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from charfast.gpt.corpus import shakespeare_documents

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl",)
PARQUET_SUFFIXES = (".parquet",)
CHUNKS_PER_FILE = 64  # a single --data text file is cut into this many documents (at line ends) for the split
PIECE_BYTES = 64 * 2**20  # consecutive text files are read and cached together up to about this size

Document = tuple[str, str]  # (name, text)


class CorpusError(ValueError):
    """A corpus file that cannot be read as its format says, naming the file (and line)."""


# ------------------------------------------------------------------ pieces
class Piece:
    """A run of consecutive documents of the corpus, read in order by `documents()`."""

    label: str  # the piece in messages and progress bars

    def documents(self) -> Iterator[Document]:
        raise NotImplementedError


@dataclass(frozen=True)
class EmbeddedPlays(Piece):
    label: str = "the embedded plays"

    def documents(self) -> Iterator[Document]:
        yield from shakespeare_documents()


@dataclass(frozen=True)
class TextFiles(Piece):
    """Text files of a folder, one document each, named by their path under `root`."""

    root: Path
    paths: tuple[Path, ...]

    @property
    def label(self) -> str:
        return f"{self.paths[0]} (+{len(self.paths) - 1} files)" if len(self.paths) > 1 else str(self.paths[0])

    def documents(self) -> Iterator[Document]:
        for path in self.paths:
            yield document_name(path.relative_to(self.root)), read_text_file(path)


@dataclass(frozen=True)
class TextFileChunks(Piece):
    """One text file cut at line ends into CHUNKS_PER_FILE documents of as many lines each
    (the last shorter), "NAME:i"; lines are split as str.splitlines splits them."""

    path: Path

    @property
    def label(self) -> str:
        return str(self.path)

    def documents(self) -> Iterator[Document]:
        n_lines = sum(1 for _ in text_lines(self.path))
        per_chunk = max(1, -(-n_lines // CHUNKS_PER_FILE))
        name, chunk = document_name(self.path.name), []
        for i, line in enumerate(text_lines(self.path)):
            chunk.append(line)
            if len(chunk) == per_chunk:
                yield f"{name}:{i // per_chunk}", "".join(chunk)
                chunk = []
        if chunk:
            yield f"{name}:{n_lines // per_chunk}", "".join(chunk)


@dataclass(frozen=True)
class JsonlFile(Piece):
    path: Path
    name: str  # the file's name in its documents' names
    text_field: str

    @property
    def label(self) -> str:
        return str(self.path)

    def documents(self) -> Iterator[Document]:
        with _open_binary(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{self.path} line {number}"
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise CorpusError(f"--data: {where} is not a JSON object ({err})") from None
                text = record.get(self.text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise CorpusError(
                        f"--data: {where} has no string field {self.text_field!r} (its keys: "
                        f"{sorted(record) if isinstance(record, dict) else type(record).__name__}); "
                        "name the text's field with --text-field"
                    )
                yield f"{self.name}:{number}", text


@dataclass(frozen=True)
class ParquetFile(Piece):
    path: Path
    name: str
    text_field: str

    @property
    def label(self) -> str:
        return str(self.path)

    def documents(self) -> Iterator[Document]:
        parquet = _pyarrow_parquet()
        try:
            file = parquet.ParquetFile(self.path)
            names = file.schema_arrow.names
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid (a damaged file) is a ValueError
            raise CorpusError(f"--data: {self.path} cannot be read as parquet ({err})") from None
        if self.text_field not in names:
            raise CorpusError(
                f"--data: {self.path} has no column {self.text_field!r} (its columns: {names}); "
                "name the text's column with --text-field"
            )
        row = 0
        for batch in self._batches(file):
            for text in batch.column(0).to_pylist():
                if not isinstance(text, str):
                    raise CorpusError(
                        f"--data: {self.path} row {row}: column {self.text_field!r} holds {type(text).__name__}, "
                        "not text"
                    )
                yield f"{self.name}:{row}", text
                row += 1

    def _batches(self, file) -> Iterator:
        try:
            yield from file.iter_batches(batch_size=1024, columns=[self.text_field])
        except (OSError, ValueError) as err:
            raise CorpusError(f"--data: {self.path} cannot be read as parquet ({err})") from None


# ------------------------------------------------------------------ a corpus
def corpus_pieces(data: str | os.PathLike | None, text_field: str = "text") -> list[Piece]:
    """The pieces of the corpus `data` names (None: the embedded plays), in reading order;
    a ValueError naming --data when there is nothing to read."""
    if data is None:
        return [EmbeddedPlays()]
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
        if not files:
            suffixes = ", ".join(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)
            raise ValueError(f"--data: no text, jsonl or parquet files ({suffixes}) under folder {path}")
        return _group(files, path, text_field)
    if path.is_file():
        if _kind(path) in ("jsonl", "parquet"):
            return _group([path], path.parent, text_field)
        return [TextFileChunks(path)]
    raise ValueError(f"--data: {path} is neither a file nor a folder")


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return None


def _group(files: list[Path], root: Path, text_field: str) -> list[Piece]:
    """Each jsonl and parquet file a piece; runs of consecutive text files grouped into pieces
    of about PIECE_BYTES (by their sizes on disk, so the grouping needs no reading)."""
    pieces, texts, size = [], [], 0
    for path in files:
        kind = _kind(path)
        if kind == "text":
            texts.append(path)
            size += path.stat().st_size
            if size < PIECE_BYTES:
                continue
        if texts:
            pieces.append(TextFiles(root, tuple(texts)))
            texts, size = [], 0
        name = document_name(path.relative_to(root))
        if kind == "jsonl":
            pieces.append(JsonlFile(path, name, text_field))
        elif kind == "parquet":
            pieces.append(ParquetFile(path, name, text_field))
    if texts:
        pieces.append(TextFiles(root, tuple(texts)))
    return pieces


# ------------------------------------------------------------------ text
def document_name(path: str | os.PathLike) -> str:
    """A file's name as text: bytes of the name that are not UTF-8 (which Python holds as
    lone surrogates, unencodable) written as backslash escapes, e.g. data\\xff.txt."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def text_lines(path: Path) -> Iterator[str]:
    """The UTF-8 text of `path` line by line (as str.splitlines(keepends=True) cuts it), line
    ends made \\n as Python's text mode reads them, a leading byte-order mark dropped; a
    CorpusError naming the file and the first byte that is not UTF-8, never a silent
    replacement (a model would train on U+FFFD)."""
    offset = 0
    with _open_binary(path) as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise CorpusError(
                    f"--data: {path} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {offset + err.start} "
                    "cannot be decoded (convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8)"
                ) from None
            if offset == 0:
                line = line.removeprefix("\ufeff")
            offset += len(raw)
            yield from line.replace("\r\n", "\n").replace("\r", "\n").splitlines(keepends=True)


def read_text_file(path: Path) -> str:
    """The whole UTF-8 text of `path`, as text_lines reads it."""
    return "".join(text_lines(path))


def _open_binary(path: Path):
    try:
        return open(path, "rb")
    except OSError as err:
        raise CorpusError(f"--data: {path} cannot be read ({err.strerror})") from None


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise CorpusError("--data: reading parquet files needs pyarrow: pip install 'charfast[parquet]'") from None
    return parquet
