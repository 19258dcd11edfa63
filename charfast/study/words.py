"""Words for the character-task study and their frozen splits.

Words come from the corpus (`word_counts`). `make_splits` divides the word types into
train and held-out words, picks the held-out words that contain a rare token, and draws
nonce strings; `freeze_splits` writes them to disk with a manifest of hashes so every run
evaluates on exactly the same words, and `load_splits` refuses files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tiktoken

from charfast.atomic import atomic_write

MIN_LETTERS, MAX_LETTERS = 5, 17  # the study's word lengths
SPLIT_NAMES = ("train", "heldout", "heldout_rare", "nonce")
MANIFEST = "manifest.json"
_FORMAT = 1  # bump when the file layout changes

# A word is a run of word characters; apostrophes inside it join ("o'er" is one word,
# which the a-z rule then drops, rather than the fragments "o" and "er"). Hyphens split
# compounds into their parts ("honey-tongued" -> "honey", "tongued").
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
_ASCII_LETTERS = re.compile(r"[A-Za-z]+")
_LOWER_WORD = re.compile(r"[a-z]+")


def word_counts(
    documents: Iterable[tuple[str, str]], min_letters: int = MIN_LETTERS, max_letters: int = MAX_LETTERS
) -> Counter[str]:
    """Occurrences of each lower-case a-z word of min_letters..max_letters letters in the
    texts of (name, text) documents (streamed once).

    Rules: a word whose characters are not all ASCII letters is left out (accents, digits,
    underscores, apostrophes: "naïve", "2nd", "o'er"). A word counts in any case ("The" and
    "THE" count for "the"), but only words seen at least once entirely in lower case are
    kept, so names that the corpus only capitalises ("Hippolyta") are not words.
    """
    if not 1 <= min_letters <= max_letters:
        raise ValueError(
            f"need 1 <= min_letters <= max_letters, got min_letters={min_letters}, max_letters={max_letters}"
        )
    counts: Counter[str] = Counter()
    seen_in_lower_case: set[str] = set()
    for _, text in documents:
        for match in _WORD.finditer(text):
            written = match.group()
            if not min_letters <= len(written) <= max_letters or not _ASCII_LETTERS.fullmatch(written):
                continue
            word = written.lower()
            counts[word] += 1
            if written == word:
                seen_in_lower_case.add(word)
    return Counter({w: c for w, c in counts.items() if w in seen_in_lower_case})


def token_frequencies(tokens: np.ndarray, n_vocab: int) -> np.ndarray:
    """[n_vocab] int64: how often each token id occurs in `tokens` (pretraining data)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got shape {tokens.shape} dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_vocab):
        raise ValueError(f"tokens must be ids in [0, n_vocab={n_vocab}), got ids in [{tokens.min()}, {tokens.max()}]")
    return np.bincount(tokens.astype(np.int64), minlength=n_vocab)


def rare_token_mask(token_counts: np.ndarray, rare_fraction: float) -> np.ndarray:
    """[n_vocab] bool: the bottom frequency bucket of the pretraining data.

    A token is rare when it never occurs, or when its count is at most the `rare_fraction`
    quantile of the counts of the tokens that do occur (the smallest count c such that at
    least that fraction of occurring tokens have count <= c; ties at c are all rare).
    """
    _check_fraction("rare_fraction", rare_fraction)
    occurring = token_counts[token_counts > 0]
    if occurring.size == 0:
        raise ValueError("token_counts: no token occurs in the pretraining data (all counts are 0)")
    threshold = np.quantile(occurring, rare_fraction, method="inverted_cdf")
    return token_counts <= threshold


def word_tokens(encoding: tiktoken.Encoding, word: str) -> list[int]:
    """The ids of the tokens that carry the word's letters as the task questions show it,
    between single quotes ('strawberry'): tokens that are only a quote do not count."""
    ids = encoding.encode_ordinary(f"'{word}'")
    start, end = 1, 1 + len(word.encode("utf-8"))  # the word's byte span inside the quotes
    out, offset = [], 0
    for token_id in ids:
        length = len(encoding.decode_single_token_bytes(token_id))
        if offset < end and offset + length > start:
            out.append(token_id)
        offset += length
    return out


@dataclass(frozen=True)
class WordSplits:
    """Word lists for the study, each sorted. heldout_rare is a subset of heldout (not a
    separate draw), so every evaluation split stays disjoint from train."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]
    heldout_rare: tuple[str, ...]
    nonce: tuple[str, ...]
    params: dict = field(default_factory=dict)  # the rules and parameters that made them

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


def make_splits(
    counts: Counter[str],
    encoding: tiktoken.Encoding,
    token_counts: np.ndarray,
    seed: int,
    heldout_fraction: float = 0.2,
    rare_fraction: float = 0.1,
    n_nonce: int = 1000,
    max_words: int = 50_000,
) -> WordSplits:
    """Split the `max_words` most frequent words of `counts` (ties broken alphabetically).

    - heldout: a seeded random `heldout_fraction` of the word types; train: the rest.
    - heldout_rare: the held-out words with at least one rare token (`rare_token_mask` of
      `token_counts`, the pretraining data's [n_vocab] token counts; `word_tokens`).
    - nonce: `n_nonce` distinct random a-z strings, none of them a word in `counts`; each
      length is drawn uniformly from the held-out word types' lengths (so the nonce lengths
      follow the held-out length distribution), each letter uniformly from a-z.
    Held-out words and nonce strings come from separate seeded streams, so changing
    n_nonce does not change the held-out words.
    """
    _check_counts(counts)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    _check_fraction("heldout_fraction", heldout_fraction)
    if not isinstance(n_nonce, int) or n_nonce < 0:
        raise ValueError(f"n_nonce must be an integer >= 0, got {n_nonce!r}")
    if not isinstance(max_words, int) or max_words < 2:
        raise ValueError(f"max_words must be an integer >= 2 (a train and a held-out word), got {max_words!r}")
    token_counts = np.asarray(token_counts)
    if token_counts.shape != (encoding.n_vocab,) or not np.issubdtype(token_counts.dtype, np.integer):
        raise ValueError(
            f"token_counts must be an integer array of shape [n_vocab={encoding.n_vocab}] "
            f"(see token_frequencies), got shape {token_counts.shape} dtype {token_counts.dtype}"
        )
    rare = rare_token_mask(token_counts, rare_fraction)

    words = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    if len(words) < 2:
        raise ValueError(f"counts: need at least 2 words to split into train and held-out, got {len(words)}")
    n_heldout = min(len(words) - 1, max(1, round(heldout_fraction * len(words))))
    heldout_rng, nonce_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    chosen = set(heldout_rng.choice(len(words), size=n_heldout, replace=False).tolist())
    heldout = sorted(words[i] for i in chosen)
    train = sorted(words[i] for i in range(len(words)) if i not in chosen)
    heldout_rare = [w for w in heldout if rare[word_tokens(encoding, w)].any()]

    lengths = np.array([len(w) for w in heldout])  # one per held-out word type
    length_set = set(lengths.tolist())
    possible = sum(26**n for n in length_set) - sum(len(w) in length_set for w in counts)
    if n_nonce > possible:
        raise ValueError(
            f"n_nonce={n_nonce} exceeds the {possible} a-z strings of the held-out words' lengths that are not words"
        )
    nonce: set[str] = set()
    while len(nonce) < n_nonce:
        length = int(nonce_rng.choice(lengths))
        candidate = "".join(chr(ord("a") + int(i)) for i in nonce_rng.integers(0, 26, size=length))
        if candidate not in counts:
            nonce.add(candidate)

    params = {
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "rare_fraction": rare_fraction,
        "n_nonce": n_nonce,
        "max_words": max_words,
        "n_candidate_words": len(words),
        "tokenizer": encoding.name,
        "n_vocab": encoding.n_vocab,
        "rare_count_threshold": int(token_counts[rare].max()),
        "n_rare_tokens": int(rare.sum()),
    }
    return WordSplits(tuple(train), tuple(heldout), tuple(heldout_rare), tuple(sorted(nonce)), params)


RULES = {
    "words": f"lower-case a-z words of {MIN_LETTERS}-{MAX_LETTERS} letters (word_counts' defaults) "
    "seen at least once in lower case; counted in any case",
    "candidates": "the max_words most frequent words, ties broken alphabetically",
    "heldout": "a seeded random heldout_fraction of the candidate word types; train is the rest (disjoint)",
    "heldout_rare": "the held-out words (a subset of heldout) with at least one rare token among the tokens "
    "that overlap the word's letters in encode_ordinary(\"'word'\"); a token is rare when it "
    "never occurs in the pretraining tokens or its count is at most the rare_fraction quantile "
    "(inverted CDF) of the counts of the tokens that occur",
    "nonce": "distinct random a-z strings, lengths drawn from the held-out words' lengths, letters uniform, "
    "none a corpus word",
}


def freeze_splits(splits: WordSplits, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write one JSON per split and manifest.json (rules, parameters, sizes, each file's
    SHA-256, plus the caller's `meta`, e.g. the corpus) into `folder`; returns the manifest path."""
    folder = Path(folder)
    hashes = {}
    for name in SPLIT_NAMES:
        data = (json.dumps(list(getattr(splits, name)), indent=0) + "\n").encode("utf-8")
        with atomic_write(folder / f"{name}.json") as f:
            f.write(data)
        hashes[f"{name}.json"] = hashlib.sha256(data).hexdigest()
    manifest = {
        "format": _FORMAT,
        "rules": RULES,
        "params": splits.params,
        "sizes": splits.sizes(),
        "sha256": hashes,
        "meta": meta or {},
    }
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"meta must hold only JSON values (str, int, float, bool, None, list, dict): {err}") from err
    path = folder / MANIFEST
    with atomic_write(path) as f:  # written last: a folder with a manifest is complete
        f.write((text + "\n").encode("utf-8"))
    return path


def load_splits(folder: str | os.PathLike) -> tuple[WordSplits, dict]:
    """(splits, manifest) from a freeze_splits folder; raises ValueError naming the file
    when a file is missing, unreadable, or its SHA-256 differs from the manifest's."""
    folder = Path(folder)
    manifest = json.loads(_read(folder / MANIFEST).decode("utf-8"))
    if manifest.get("format") != _FORMAT:
        raise ValueError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, this code reads {_FORMAT}")
    lists = {}
    for name in SPLIT_NAMES:
        path = folder / f"{name}.json"
        data = _read(path)
        expected = manifest["sha256"].get(path.name)
        if hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(
                f"{path}: SHA-256 does not match the manifest ({expected}); the split was changed after it was frozen"
            )
        lists[name] = tuple(json.loads(data.decode("utf-8")))
    return WordSplits(**lists, params=manifest["params"]), manifest


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(
            f"{path}: missing; a frozen split folder needs {MANIFEST} and {', '.join(n + '.json' for n in SPLIT_NAMES)}"
        )
    return path.read_bytes()


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def _check_counts(counts: Counter[str]) -> None:
    if not counts:
        raise ValueError("counts is empty: no words to split (see word_counts)")
    bad = [w for w, c in counts.items() if not isinstance(w, str) or not _LOWER_WORD.fullmatch(w) or c < 1]
    if bad:
        raise ValueError(f"counts must map lower-case a-z words to counts >= 1; bad entries: {bad[:5]}")
