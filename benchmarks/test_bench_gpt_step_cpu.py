"""What the char embedding adds to a GPT training step on the CPU.

    pytest benchmarks/test_bench_gpt_step_cpu.py --benchmark-only

The study's model size (3 layers, n_embd 128, 4 heads, B=16, T=256) with a 2048-token
byte-level BPE trained on the default corpus; one step = forward, backward and AdamW
update on a batch of real text. Variants, all from the same seed:

    baseline        no char embedding
    char-cpp        + CharEmbedding(backend="cpp") (the CPU default)
    char-reference  + CharEmbedding(backend="reference")
    char-study      + the same char encoder computed the study's way (nn.LSTM over packed
                    sequences of all B*T tokens, charfast.packed_lstm)
    *-compiled      the same model under torch.compile (inductor; compiled in the warm-up)
"""
from __future__ import annotations

import statistics
import time
import types

import pytest
import torch

from charfast import GPT, GPTConfig, TokenCharTable
from charfast.backends import why_unavailable
from charfast.bpe import train_bpe
from charfast.corpus import shakespeare_documents
from charfast.packed_lstm import packed_lstm_char_embedding

from conftest import batch_ids

BATCH, SEQ_LEN, VOCAB = 16, 256, 2048
VARIANTS = ["baseline", "char-cpp", "char-reference", "char-study", "baseline-compiled", "char-cpp-compiled"]


@pytest.fixture(scope="module")
def bpe_data():
    texts = [body for _, body in shakespeare_documents()]
    encoding = train_bpe(texts, VOCAB)  # cached after the first run
    tokens = torch.tensor(encoding.encode_ordinary("\n".join(texts)))
    batch = batch_ids(tokens, BATCH, SEQ_LEN + 1)  # [B, T+1]
    return TokenCharTable.from_tiktoken(encoding), batch[:, :-1], batch[:, 1:]


def build_model(variant: str, table: TokenCharTable) -> GPT:
    torch.manual_seed(0)
    char = not variant.startswith("baseline")
    backend = "cpp" if variant.startswith("char-cpp") else "reference"
    config = GPTConfig(vocab_size=table.vocab_size, block_size=SEQ_LEN, n_layer=3, n_head=4, n_embd=128,
                       arch="char" if char else "baseline", char_backend=backend)
    model = GPT(config, char_table=table if char else None)
    if variant == "char-study":
        model.char_emb.forward = types.MethodType(packed_lstm_char_embedding, model.char_emb)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_train_step(benchmark, bpe_data, variant):
    if variant.startswith("char-cpp") and why_unavailable("cpp", torch.device("cpu")):
        pytest.skip(f"cpp backend unavailable: {why_unavailable('cpp', torch.device('cpu'))}")
    table, idx, targets = bpe_data
    model = build_model(variant, table)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if variant.endswith("-compiled") else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = forward(idx, targets)
        loss.backward()
        optimizer.step()
        return loss

    benchmark.group = f"GPT train step, CPU, 3x128, B={BATCH} T={SEQ_LEN} V={table.vocab_size}"
    benchmark.extra_info.update(parameters=model.num_parameters(), distinct_ids=int(torch.unique(idx).numel()),
                                mean_token_len=float(table.lengths[idx].float().mean()))
    loss = benchmark.pedantic(step, rounds=8, warmup_rounds=2)
    assert torch.isfinite(loss)


def test_char_overhead_interleaved(benchmark, bpe_data):
    """The char embedding's share of the eager step, with baseline and char-cpp steps
    alternated (so drift in the machine's speed hits both alike): extra_info holds the
    median ratio char / baseline. The timed call is one char-cpp step."""
    if why_unavailable("cpp", torch.device("cpu")):
        pytest.skip("cpp backend unavailable")
    table, idx, targets = bpe_data
    steps = {}
    for variant in ("baseline", "char-cpp"):
        model = build_model(variant, table)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            model(idx, targets)[1].backward()
            optimizer.step()
        steps[variant] = step
    times = {variant: [] for variant in steps}
    for round_index in range(12):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= 2:  # warm-up rounds
                times[variant].append(time.perf_counter() - start)
    ratio = statistics.median(times["char-cpp"]) / statistics.median(times["baseline"])
    benchmark.group = f"GPT train step, CPU, 3x128, B={BATCH} T={SEQ_LEN}: char overhead, interleaved"
    benchmark.extra_info.update(char_over_baseline=round(ratio, 4),
                                baseline_median_ms=round(statistics.median(times["baseline"]) * 1e3, 2),
                                char_median_ms=round(statistics.median(times["char-cpp"]) * 1e3, 2))
    benchmark.pedantic(steps["char-cpp"], rounds=3, warmup_rounds=0)
    assert ratio < 2
