"""A byte-level BPE trained on a corpus, exposed as a tiktoken Encoding.

Training uses HuggingFace `tokenizers` (fast, well kept). Its merges are turned into
tiktoken's mergeable ranks (byte b -> rank b, the i-th merge -> rank 256 + i), so the
result is an ordinary tiktoken.Encoding and everything downstream
(TokenCharTable.from_tiktoken, data caching) treats it like cl100k_base. Both use GPT-2's
pre-tokenization regex, so words are split the same way during training and encoding.
One special token, <|endoftext|>, separates documents; it gets the id after the ranks.

Trained ranks are cached on disk, keyed by the corpus text, the vocabulary size and the
token-length limit, so a second run loads them in milliseconds; a cache file that fails
its integrity check (charfast.cache) is retrained, saying so.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import tiktoken

from charfast.cache import default_cache_dir, read_checked, write_checked
from charfast.token_bytes import BYTE_LEVEL_ALPHABET

_FORMAT = 1  # bump when the cache file layout or the training recipe changes
END_OF_TEXT = "<|endoftext|>"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def end_of_text_id(encoding) -> int | None:
    """The id of <|endoftext|> (the document separator) in `encoding`, None when it has none."""
    return encoding.encode_single_token(END_OF_TEXT) if END_OF_TEXT in encoding.special_tokens_set else None


def _train_ranks(texts: Iterable[str], vocab_size: int, max_token_length: int | None) -> dict[bytes, int]:
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    except ImportError as err:
        raise RuntimeError("training a BPE needs the 'tokenizers' package: pip install tokenizers") from err
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    import json  # the trained merges are only reachable through the JSON dump

    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    ranks = {bytes([b]): b for b in range(256)}
    for pair in merges:
        left, right = pair if isinstance(pair, list) else pair.split(" ")
        ranks[bytes(BYTE_LEVEL_ALPHABET[ch] for ch in left + right)] = len(ranks)
    return ranks


def train_bpe(
    texts: list[str], vocab_size: int, max_token_length: int | None = None, cache_dir: str | os.PathLike | None = None
) -> tiktoken.Encoding:
    """A byte-level BPE with `vocab_size` ranks (256 bytes + merges) trained on `texts`,
    plus <|endoftext|> (id vocab_size), as a tiktoken Encoding named "bpe{vocab_size}-{hash}"."""
    if not isinstance(vocab_size, int) or vocab_size < 257:
        raise ValueError(
            f"train_bpe: vocab_size must be an int >= 257 (256 bytes + at least one merge), got {vocab_size!r}"
        )
    if max_token_length is not None and (not isinstance(max_token_length, int) or max_token_length < 2):
        raise ValueError(f"train_bpe: max_token_length must be an int >= 2 or None, got {max_token_length!r}")
    digest = hashlib.sha256(f"{_FORMAT}|{vocab_size}|{max_token_length}|".encode())
    for text in texts:
        digest.update(len(text).to_bytes(8, "little") + text.encode("utf-8"))
    name = f"bpe{vocab_size}" + (f"x{max_token_length}" if max_token_length else "") + f"-{digest.hexdigest()[:12]}"
    cache_file = Path(cache_dir or default_cache_dir()) / f"{name}.tiktoken"
    ranks = _read_ranks(cache_file, key=digest.hexdigest())
    if ranks is None:
        ranks = _train_ranks(texts, vocab_size, max_token_length)
        _write_ranks(cache_file, ranks, key=digest.hexdigest())
    return tiktoken.Encoding(
        name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={END_OF_TEXT: len(ranks)}
    )


def _read_ranks(path: Path, key: str) -> dict[bytes, int] | None:
    """The ranks in `path`, or None when it is missing or fails its check for `key` (then we retrain)."""
    payload = read_checked(path, key)
    if payload is None:
        return None
    ranks = {}
    for line in payload.decode("ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _write_ranks(path: Path, ranks: dict[bytes, int], key: str) -> None:
    """tiktoken's text format (base64 token, rank) behind the cache's integrity header."""
    try:
        lines = [f"{base64.b64encode(t).decode()} {r}\n".encode("ascii") for t, r in ranks.items()]
        write_checked(path, lines, key)
    except OSError:
        pass  # a read-only cache folder costs a retrain next time, nothing more
