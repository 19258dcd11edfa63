"""A corpus's tokens, cached as a pair of token shards (train, val) per piece of the corpus
and read back as one stream by memmap: the corpus never sits in memory, a piece is
tokenized once, and an interrupted tokenization resumes with the pieces it finished.

Each document's tokens are followed by <|endoftext|> when the encoding has it. A shard is
a checked cache file (charfast.cache) keyed by the encoding, the piece's content digest and
which of its documents are held out; documents are encoded by `workers` threads (tiktoken
releases the GIL) while this one reads the next.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

from charfast.cache import HEADER_SIZE, checked_payload_offset, checked_writer, default_cache_dir
from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.corpus_index import CorpusIndex

_FORMAT = 3  # bump when the shard layout changes
LABELS = ("train", "val")
BATCH_CHARS = 1 << 20  # documents go to an encoding thread in batches of about this much text


class TokenStream:
    """Token shards read as one stream (their concatenation), by window, without a copy."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = [shard for shard in shards if len(shard)]  # [n_i] each
        self.ends = np.cumsum([len(shard) for shard in self.shards], dtype=np.int64)  # [n_shards]

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def window(self, start: int, length: int) -> np.ndarray:
        """[length] int64: tokens start..start+length-1, across shard ends where they fall."""
        if not 0 <= start <= start + length <= len(self):
            raise IndexError(f"window [{start}, {start + length}) outside the {len(self)} tokens")
        parts, shard = [], int(np.searchsorted(self.ends, start, side="right"))
        while length > 0:
            offset = start - (int(self.ends[shard]) - len(self.shards[shard]))
            part = self.shards[shard][offset : offset + length]
            parts.append(part)
            start, length, shard = start + len(part), length - len(part), shard + 1
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def chunks(self, size: int = 1 << 24) -> Iterator[np.ndarray]:
        """The tokens in order, at most `size` at a time (as stored, not copied)."""
        for shard in self.shards:
            for start in range(0, len(shard), size):
                yield shard[start : start + size]


def token_dtype(n_vocab: int) -> np.dtype:
    return np.dtype(np.uint16 if n_vocab <= 2**16 else np.uint32)


def tokenize_corpus(
    encoding: tiktoken.Encoding,
    index: CorpusIndex,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    show_progress: bool = True,
) -> dict[str, TokenStream]:
    """{"train": ..., "val": ...}: the corpus's tokens, split as `index` holds them out,
    from the cache, tokenizing (with `workers` threads) the pieces it lacks. Where the cache
    cannot be written (read-only, full, no permission) a piece's tokens are kept in memory
    instead, and a note says why."""
    eot = end_of_text_id(encoding)
    dtype = token_dtype(encoding.n_vocab)
    folder = Path(cache_dir or default_cache_dir()) / "tokens"
    shards = {label: [] for label in LABELS}
    missing = []  # [(piece number, {label: (path, key)})]
    for number in range(len(index.pieces)):
        key = _shard_key(encoding, eot, index.digests[number], index.held_out_in(number))
        name = hashlib.sha256(key.encode()).hexdigest()[:16]
        files = {label: (folder / f"{label}-{encoding.name}-{name}.{dtype.name}", f"{key}|{label}") for label in LABELS}
        found = {label: _read_shard(*files[label], dtype) for label in LABELS}
        if any(tokens is None for tokens in found.values()):
            missing.append((number, files))
        for label in LABELS:
            shards[label].append(found[label])
    if missing:
        bar = tqdm(
            total=sum(index.counts[number] for number, _ in missing),
            desc="tokenizing",
            unit="doc",
            disable=not show_progress,
        )
        encode = _Encoder(encoding, eot, dtype, workers)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for number, files in missing:
                made = _tokenize_piece(index, number, files, encode, pool, bar)
                for label in LABELS:
                    shards[label][number] = made[label]
        bar.close()
    return {label: TokenStream(shards[label]) for label in LABELS}


def _shard_key(encoding: tiktoken.Encoding, eot: int | None, piece_digest: str, held_out: np.ndarray) -> str:
    held = hashlib.sha256(np.ascontiguousarray(held_out, dtype=np.int64).tobytes()).hexdigest()
    return f"{_FORMAT}|{encoding.name}|{encoding.n_vocab}|{eot}|{piece_digest}|{held}"


def _read_shard(path: Path, key: str, dtype: np.dtype) -> np.ndarray | None:
    """The tokens of a checked shard file, read-only; None when it is missing or fails its
    check."""
    return None if checked_payload_offset(path, key=key) is None else _payload(path, dtype)


def _payload(path: Path, dtype: np.dtype) -> np.ndarray:
    """The tokens behind the header of a shard file, by memmap; an empty payload is an empty
    array (a memmap cannot map zero bytes)."""
    if path.stat().st_size == HEADER_SIZE:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE)


class _Encoder:
    """Texts -> their token arrays (each followed by <|endoftext|> when there is one)."""

    def __init__(self, encoding: tiktoken.Encoding, eot: int | None, dtype: np.dtype, workers: int):
        self.encoding, self.suffix, self.dtype = encoding, [] if eot is None else [eot], dtype
        self.workers = workers  # threads that call it: batches kept in flight scale with them

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(self.encoding.encode_ordinary(text) + self.suffix, dtype=self.dtype) for text in texts]


def _tokenize_piece(index, number, files, encode, pool, bar) -> dict[str, np.ndarray]:
    """Tokenize piece `number` into its two shard files ({label: (path, key)}; or, when they
    cannot be written, into memory) and return its tokens per label."""
    try:
        with ExitStack() as opened:
            writers = {label: opened.enter_context(checked_writer(*files[label])) for label in LABELS}
            for label, tokens in _piece_tokens(index, number, encode, pool, bar):
                writers[label](tokens.tobytes())
    except OSError as err:
        folder = files["train"][0].parent
        if err.filename is None or not (folder == Path(err.filename) or folder in Path(err.filename).parents):
            raise  # not the cache's fault: e.g. a corpus file gone while it was read
        print(f"note: cannot write the token cache {err.filename} ({err.strerror}); keeping the tokens in memory")
        kept = {label: [np.zeros(0, dtype=encode.dtype)] for label in LABELS}
        for label, tokens in _piece_tokens(index, number, encode, pool, bar):
            kept[label].append(tokens)
        return {label: np.concatenate(kept[label]) for label in LABELS}
    return {label: _payload(files[label][0], encode.dtype) for label in LABELS}  # written just now: not re-read


def _piece_tokens(index: CorpusIndex, number: int, encode: _Encoder, pool, bar) -> Iterator[tuple[str, np.ndarray]]:
    """(label, tokens) of each document of piece `number` in order, encoded in batches on
    `pool` with a few batches in flight, while this thread reads on."""
    held_out = set(index.held_out_in(number).tolist())
    in_flight = deque()  # [(labels of the batch, future of its token arrays)]

    def results(keep: int):
        while len(in_flight) > keep:
            labels, future = in_flight.popleft()
            yield from zip(labels, future.result())
            bar.update(len(labels))

    labels, texts, chars = [], [], 0
    for i, (_, text) in enumerate(index.pieces[number].documents()):
        labels.append("val" if i in held_out else "train")
        texts.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS:
            in_flight.append((labels, pool.submit(encode, texts)))
            labels, texts, chars = [], [], 0
            yield from results(keep=2 * encode.workers)
    if texts:
        in_flight.append((labels, pool.submit(encode, texts)))
    yield from results(keep=0)
