"""Training data: documents -> train/val split by document -> tokens cached as a memmap
-> random windows drawn as batches, resumable and sharded across ranks.

Batches are drawn by counter: micro-batch number i takes its window starts from a
generator seeded with (seed, i), so the data position is one integer, a resumed run draws
exactly the batches it would have drawn, and the global batch (batch_size x world_size
rows) is the same whatever the number of ranks; rank r takes rows [r*B, (r+1)*B).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import tiktoken
import torch
from tqdm import tqdm

from charfast.cache import HEADER_SIZE, checked_payload_offset, default_cache_dir, write_checked
from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.corpus import shakespeare_documents

_FORMAT = 2  # bump when the token cache layout changes
TEXT_SUFFIXES = (".txt", ".md", ".text")
CHUNKS_PER_FILE = 64  # a single --data file is cut into this many documents (at line ends) for the split


# ------------------------------------------------------------------ documents
def load_documents(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """[(name, text)]: the embedded Shakespeare corpus when `path` is None, every text file
    under a folder (one document each), or one file cut into CHUNKS_PER_FILE documents."""
    if path is None:
        return shakespeare_documents()
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"--data: no text files ({', '.join(TEXT_SUFFIXES)}) under folder {path}")
        return [(document_name(f.relative_to(path)), read_text_file(f)) for f in files]
    if path.is_file():
        lines = read_text_file(path).splitlines(keepends=True)
        per_chunk = max(1, -(-len(lines) // CHUNKS_PER_FILE))
        return [
            (f"{document_name(path.name)}:{i // per_chunk}", "".join(lines[i : i + per_chunk]))
            for i in range(0, len(lines), per_chunk)
        ]
    raise ValueError(f"--data: {path} is neither a text file nor a folder")


def corpus_digest(documents: list[tuple[str, str]]) -> str:
    """SHA-256 of a corpus's documents (names and texts): what a run was trained on, by
    content, whatever path it was read from."""
    digest = hashlib.sha256()
    for name, text in documents:
        digest.update(f"{len(name)}|{name}|{len(text)}|".encode() + text.encode("utf-8"))
    return digest.hexdigest()


def document_name(path: str | os.PathLike) -> str:
    """A file's name as text: bytes of the name that are not UTF-8 (which Python holds as
    lone surrogates, unencodable) written as backslash escapes, e.g. data\\xff.txt."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_text_file(path: Path) -> str:
    """The UTF-8 text of `path`, line ends made \\n (as Python's text mode reads them); a
    ValueError naming the file and the first byte that is not UTF-8, never a silent
    replacement (a model would train on U+FFFD)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"--data: {path} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} cannot be "
            "decoded (convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def split_documents(
    documents: list[tuple[str, str]], val_fraction: float, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, val): a seeded choice of whole documents (at least one) is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    if len(documents) < 2:
        raise ValueError(f"the corpus needs at least 2 documents to hold some out for validation, got {len(documents)}")
    n_val = min(len(documents) - 1, max(1, round(val_fraction * len(documents))))
    held_out = set(np.random.default_rng(seed).permutation(len(documents))[:n_val].tolist())
    train = [d for i, d in enumerate(documents) if i not in held_out]
    val = [d for i, d in enumerate(documents) if i in held_out]
    return train, val


# ------------------------------------------------------------------ token cache
def tokenize(
    encoding: tiktoken.Encoding,
    documents: list[tuple[str, str]],
    label: str,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """All documents' tokens, each document followed by <|endoftext|> when the encoding has
    it, as a read-only memmap; tokenized once and cached under a key of encoding + text.
    When the cache cannot be written (read-only, full, no permission) the tokens are kept
    in memory instead, and a note says why."""
    eot = end_of_text_id(encoding)
    dtype = np.uint16 if encoding.n_vocab <= 2**16 else np.uint32
    digest = hashlib.sha256(f"{_FORMAT}|{encoding.name}|{encoding.n_vocab}|{eot}|".encode())
    for name, text in documents:
        digest.update(f"{name}|{len(text)}|".encode() + text.encode("utf-8"))
    path = (
        Path(cache_dir or default_cache_dir())
        / "tokens"
        / f"{label}-{encoding.name}-{digest.hexdigest()[:16]}.{np.dtype(dtype).name}"
    )
    offset = checked_payload_offset(path, key=digest.hexdigest())
    if offset is not None:
        return _token_memmap(path, dtype, offset)

    def per_document():  # [n_i] tokens of each document, streamed
        for _, text in tqdm(documents, desc=f"tokenizing {label}", unit="doc", disable=not show_progress):
            yield np.asarray(encoding.encode_ordinary(text) + ([eot] if eot is not None else []), dtype=dtype)

    try:
        write_checked(path, (ids.tobytes() for ids in per_document()), key=digest.hexdigest())
    except OSError as err:
        print(f"note: cannot write the token cache {path} ({err.strerror}); keeping the tokens in memory")
        return np.concatenate([np.zeros(0, dtype=dtype), *per_document()])
    return _token_memmap(path, dtype, HEADER_SIZE)


def _token_memmap(path: Path, dtype, offset: int) -> np.ndarray:
    """The tokens of a checked cache file, read-only; an empty payload is an empty array (a
    memmap cannot map zero bytes)."""
    if path.stat().st_size == offset:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset)


# ------------------------------------------------------------------ batches
class TokenBatches:
    """Random windows of `tokens` as (x, y) [batch_size, block_size] int64 batches for
    this rank. `position` counts the micro-batches drawn; it is the resumable state."""

    def __init__(
        self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"the data has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                f"use more data or a smaller block size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0

    def batch(self, index: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch number `index` (this rank's rows of the global batch)."""
        T, B = self.block_size, self.batch_size
        starts = np.random.default_rng([self.seed, index]).integers(0, len(self.tokens) - T, size=B * self.world_size)
        starts = starts[self.rank * B : (self.rank + 1) * B]  # [B]
        windows = np.stack([np.asarray(self.tokens[s : s + T + 1], dtype=np.int64) for s in starts])  # [B, T+1]
        windows = torch.from_numpy(windows)
        if torch.device(device).type == "cuda":
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]

    def next(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(self.position, device)
        self.position += 1
        return x, y

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"data state was saved with seed {state.get('seed')!r}, this run uses {self.seed}")
        self.position = int(state["position"])
