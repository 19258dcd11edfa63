"""A corpus read once from end to end, one document at a time: how many documents each
piece holds, a digest of each piece (what its token shard is cached under) and of the
whole corpus (what checkpoints record), and which documents are held out for validation.

The split: a seeded choice of round(val_fraction x N) of the N documents (at least one, and
one left to train on), by their index in reading order. It needs the count, not the texts
(8 bytes per document, briefly, for the permutation), and is the split of every earlier
run, so their checkpoints resume and their study folders are reused.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from charfast.gpt.sources import Document, Piece, corpus_pieces


@dataclass(frozen=True)
class CorpusIndex:
    pieces: list[Piece]
    counts: list[int]  # documents per piece
    digests: list[str]  # SHA-256 per piece of its documents' names and texts
    sha256: str  # of all documents' names and texts, in order (corpus_digest)
    held_out: np.ndarray  # [n_val] sorted int64: indices of the validation documents

    @property
    def n_documents(self) -> int:
        return sum(self.counts)

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """[n_pieces] int64: the index of each piece's first document."""
        return np.cumsum([0, *self.counts[:-1]], dtype=np.int64)

    def held_out_in(self, piece: int) -> np.ndarray:
        """[k] int64: the indices within piece number `piece` of its validation documents."""
        start = int(self.starts[piece])
        lo, hi = np.searchsorted(self.held_out, [start, start + self.counts[piece]])
        return self.held_out[lo:hi] - start

    def split_documents(self, val: bool) -> Iterator[Document]:
        """The validation documents (val) or the training ones, streamed in order."""
        for number, piece in enumerate(self.pieces):
            held_out = set(self.held_out_in(number).tolist())
            for i, document in enumerate(piece.documents()):
                if (i in held_out) == val:
                    yield document

    def texts(self, val: bool) -> Iterator[str]:
        """The texts of split_documents(val)."""
        return (text for _, text in self.split_documents(val))


def index_corpus(
    data: str | None, val_fraction: float, seed: int, text_field: str = "text", show_progress: bool = False
) -> CorpusIndex:
    """Read the corpus `data` names (None: the embedded plays) once and index it."""
    check_val_fraction(val_fraction)
    pieces = corpus_pieces(data, text_field)
    counts, digests, whole = _read(pieces, show_progress)
    return CorpusIndex(pieces, counts, digests, whole, held_out_indices(sum(counts), val_fraction, seed))


def corpus_digest(data: str | None, text_field: str = "text") -> str:
    """The corpus digest of `data` (CorpusIndex.sha256), read without indexing it."""
    return _read(corpus_pieces(data, text_field))[2]


def _read(pieces: list[Piece], show_progress: bool = False) -> tuple[list[int], list[str], str]:
    """(documents per piece, each piece's digest, the whole corpus's digest) of one pass."""
    counts, digests, whole = [], [], hashlib.sha256()
    bar = tqdm(desc="reading the corpus", unit="doc", disable=not show_progress)
    for piece in pieces:
        digest, count = hashlib.sha256(), 0
        for name, text in piece.documents():
            record = _document_record(name, text)
            digest.update(record)
            whole.update(record)
            count += 1
        bar.update(count)
        counts.append(count)
        digests.append(digest.hexdigest())
    bar.close()
    return counts, digests, whole.hexdigest()


def _document_record(name: str, text: str) -> bytes:
    return f"{len(name)}|{name}|{len(text)}|".encode() + text.encode("utf-8", "surrogatepass")


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")


def held_out_indices(n_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """[n_val] sorted int64: the documents held out for validation (see the module's note)."""
    check_val_fraction(val_fraction)
    if n_documents < 2:
        raise ValueError(f"the corpus needs at least 2 documents to hold some out for validation, got {n_documents}")
    n_val = min(n_documents - 1, max(1, round(val_fraction * n_documents)))
    return np.sort(np.random.default_rng(seed).permutation(n_documents)[:n_val]).astype(np.int64)
