"""The data pipeline: tokenize the default corpus into token shards (cold cache).

    pytest benchmarks/test_bench_data_cpu.py --benchmark-only

Each round tokenizes all of Shakespeare's plays into a fresh cache folder with
charfast.gpt.token_shards.tokenize_corpus, for the default 512-rank corpus BPE and for
cl100k_base, with 1 and 2 worker threads; extra_info gives the throughput in MB of text
per second. (Corpora larger than memory: benchmarks/data_at_scale.py.)
"""

from __future__ import annotations

import functools
import tempfile

import pytest

from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.token_shards import tokenize_corpus
from charfast.gpt.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def index():
    return index_corpus(None, 0.1, seed=1337)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("tokenizer", ["bpe:512", "cl100k_base"])
def test_tokenize_into_shards(benchmark, index, tokenizer, workers):
    encoding = get_tokenizer(tokenizer, functools.partial(index.texts, val=False))
    megabytes = sum(len(text.encode("utf-8")) for piece in index.pieces for _, text in piece.documents()) / 1e6

    def cold_tokenize():
        with tempfile.TemporaryDirectory() as cache_dir:
            tokens = tokenize_corpus(encoding, index, cache_dir, workers=workers, show_progress=False)
            return len(tokens["train"]) + len(tokens["val"])

    benchmark.group = f"data: tokenize into shards, Shakespeare (cold cache), {tokenizer}"
    n_tokens = benchmark.pedantic(cold_tokenize, rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(
        text_mb=round(megabytes, 2), tokens=n_tokens, mb_per_s=round(megabytes / benchmark.stats.stats.median, 2)
    )
    assert n_tokens > 1_000_000
