"""Inference: CharEmbedding's vocabulary cache (one lookup) vs computing the char-LSTM.

    pytest benchmarks/test_bench_inference_cpu.py --benchmark-only

eval() mode under no_grad on a B x T batch of cl100k Shakespeare tokens: `cached` answers
from the [V, d_model] table built once (outside the timing) for the whole vocabulary;
`uncached` runs the cpp backend on the batch's distinct tokens every call.
"""

from __future__ import annotations

import time

import pytest
import torch
from conftest import batch_ids

from charfast import CharEmbedding
from charfast.backends import why_unavailable

BATCH, SEQ_LEN, WIDTH = 16, 256, 128

pytestmark = pytest.mark.skipif(
    why_unavailable("cpp", torch.device("cpu")) is not None, reason="cpp backend unavailable"
)


@pytest.mark.parametrize("mode", ["cached", "uncached"])
def test_char_embedding_inference(benchmark, cl100k_table, shakespeare_tokens, mode):
    torch.manual_seed(0)
    module = CharEmbedding(
        cl100k_table, WIDTH, char_dim=WIDTH, hidden=WIDTH, backend="cpp", inference_cache=mode == "cached"
    ).eval()
    idx = batch_ids(shakespeare_tokens, BATCH, SEQ_LEN)
    with torch.no_grad():
        start = time.perf_counter()
        module(idx)  # builds the cache in "cached" mode
        first_call_s = time.perf_counter() - start
        benchmark.group = f"char embedding inference, CPU, B={BATCH} T={SEQ_LEN} d={WIDTH}"
        benchmark.extra_info.update(
            vocab=cl100k_table.vocab_size,
            first_call_s=round(first_call_s, 3),
            distinct_ids=int(torch.unique(idx).numel()),
        )
        out = benchmark.pedantic(module, args=(idx,), rounds=20, warmup_rounds=2)
    assert out.shape == (BATCH, SEQ_LEN, WIDTH) and torch.isfinite(out).all()
