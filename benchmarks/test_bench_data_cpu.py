"""The data pipeline: tokenize the default corpus and write it as a memmap (cold cache).

    pytest benchmarks/test_bench_data_cpu.py --benchmark-only

Each round tokenizes all of Shakespeare's plays into a fresh cache folder with
charfast.gpt.data.tokenize, for the default 512-rank corpus BPE and for cl100k_base;
extra_info gives the throughput in MB of text per second.
"""

from __future__ import annotations

import tempfile

import pytest

from charfast.gpt.bpe import train_bpe
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.data import tokenize
from charfast.gpt.tokenizer import get_tiktoken


@pytest.fixture(scope="module")
def documents():
    return shakespeare_documents()


@pytest.mark.parametrize("tokenizer", ["bpe512", "cl100k_base"])
def test_tokenize_to_memmap(benchmark, documents, tokenizer):
    encoding = train_bpe([text for _, text in documents], 512) if tokenizer == "bpe512" else get_tiktoken(tokenizer)
    megabytes = sum(len(text.encode("utf-8")) for _, text in documents) / 1e6

    def cold_tokenize():
        with tempfile.TemporaryDirectory() as cache_dir:
            return len(tokenize(encoding, documents, "bench", cache_dir=cache_dir, show_progress=False))

    benchmark.group = "data: tokenize + memmap, Shakespeare (cold cache)"
    n_tokens = benchmark.pedantic(cold_tokenize, rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(
        text_mb=round(megabytes, 2), tokens=n_tokens, mb_per_s=round(megabytes / benchmark.stats.stats.median, 2)
    )
    assert n_tokens > 1_000_000
