"""CPU benchmark of the char embedding: the fused C++ backend vs the reference vs nn.LSTM.

    pytest benchmarks/test_bench_char_lstm_cpu.py --benchmark-only

One batch of B x T cl100k tokens of the default Shakespeare corpus; every implementation
computes CharEmbedding's output for every position and its backward (all parameter
gradients) from the same float32 weights, d_model = char_dim = hidden = 128:

    cpp          CharEmbedding(backend="cpp"): unique ids, LSTM over their prefix trie
    reference    CharEmbedding(backend="reference"): unique ids, padded PyTorch step loop
    lstm-padded  torch.nn.LSTM over the distinct tokens padded to the longest
    lstm-packed  torch.nn.LSTM over packed sequences of the distinct tokens (each its own length)
    study        torch.nn.LSTM over packed sequences of all B*T tokens (the original study)

extra_info records the work: positions, distinct ids, mean token length, the LSTM cell
steps each implementation runs and the forward+backward FLOPs of its matrix products, and
the recurrent work over every char of the distinct tokens and the least bytes to move
(recurrent_flops, min_bytes: conftest.recurrent_work, the GPU benchmark's floor; the cpp
trie shares prefixes, so it multiplies less than recurrent_flops).
Compare the medians within one run: the machine may be shared.
"""

from __future__ import annotations

import pytest
import torch
from conftest import batch_ids, batch_work, recurrent_work

from charfast import CharEmbedding
from charfast.backends import why_unavailable
from charfast.baselines.packed_lstm import (
    packed_distinct_lstm_char_embedding,
    packed_lstm_char_embedding,
    padded_lstm_char_embedding,
)

BATCH, SEQ_LEN, WIDTH = 16, 256, 128
ROUNDS = {"cpp": 20, "reference": 5, "lstm-padded": 5, "lstm-packed": 5, "study": 5}
FORWARDS = {
    "cpp": lambda module, idx: module(idx),
    "reference": lambda module, idx: module(idx),
    "lstm-padded": padded_lstm_char_embedding,
    "lstm-packed": packed_distinct_lstm_char_embedding,
    "study": packed_lstm_char_embedding,
}

pytestmark = pytest.mark.skipif(
    why_unavailable("cpp", torch.device("cpu")) is not None,
    reason=f"cpp backend unavailable: {why_unavailable('cpp', torch.device('cpu'))}",
)


@pytest.fixture(scope="module")
def batch(cl100k_table, shakespeare_tokens):
    return batch_ids(shakespeare_tokens, BATCH, SEQ_LEN)  # [B, T]


@pytest.fixture(scope="module")
def work(cl100k_table, batch) -> dict:
    from charfast.backends.cpp import batch_trie_stats

    ids = torch.unique(batch)
    lengths = cl100k_table.lengths[ids].long()
    return dict(
        batch_work(cl100k_table, batch),
        threads=torch.get_num_threads(),
        mean_token_len=round(float(cl100k_table.lengths[batch].float().mean()), 3),
        padded_steps=ids.numel() * int(lengths.max()),
        internal_nodes=batch_trie_stats(cl100k_table, ids)["internal_nodes"],
    )


def matmul_flops(impl: str, work: dict) -> dict:
    """Cell steps and forward+backward FLOPs of the matrix products (backward = 2x forward).
    nn.LSTM multiplies every step's input by W_ih; charfast gathers it from a per-char table."""
    steps = {
        "cpp": work["internal_nodes"],
        "reference": work["padded_steps"],
        "lstm-padded": work["padded_steps"],
        "lstm-packed": work["distinct_chars"],
        "study": work["all_chars"],
    }[impl]
    per_step = 2 * 4 * WIDTH * WIDTH * (1 if impl in ("cpp", "reference") else 2)  # h@W_hh (+ x@W_ih)
    return {"cell_steps": steps, "matmul_flops_fwd_bwd": 3 * steps * per_step}


def char_embedding(table, backend: str) -> CharEmbedding:
    torch.manual_seed(0)  # the same weights for every implementation
    return CharEmbedding(table, WIDTH, char_dim=WIDTH, hidden=WIDTH, backend=backend)


@pytest.mark.parametrize("impl", list(FORWARDS))
def test_char_embedding_forward_backward(benchmark, cl100k_table, batch, work, impl):
    module = char_embedding(cl100k_table, impl if impl in ("cpp", "reference") else "reference")
    forward = FORWARDS[impl]
    grad_out = torch.randn(BATCH, SEQ_LEN, WIDTH, generator=torch.Generator().manual_seed(1))

    def step():
        module.zero_grad(set_to_none=True)
        forward(module, batch).backward(grad_out)

    benchmark.group = f"char embedding fwd+bwd, CPU, B={BATCH} T={SEQ_LEN} d={WIDTH}"
    benchmark.extra_info.update(
        work, **matmul_flops(impl, work), **recurrent_work(work, WIDTH, backward=True, bytes_per_value=4)
    )
    benchmark.pedantic(step, rounds=ROUNDS[impl], warmup_rounds=1)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_trie_selection(benchmark, cl100k_table, batch, work):
    """The per-batch trie work (select the batch's nodes from the vocabulary trie): must be
    far cheaper than the LSTM it saves."""
    from charfast.backends.cpp import vocab_trie

    trie_nodes, token_node = vocab_trie(cl100k_table)
    ids = torch.unique(batch)
    benchmark.group = "cpp trie selection"
    benchmark.extra_info.update(work)
    stats = benchmark(torch.ops.charfast.trie_batch_stats, trie_nodes, token_node, ids)
    assert stats[0] == work["trie_nodes"]
