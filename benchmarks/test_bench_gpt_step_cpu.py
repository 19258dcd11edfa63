"""What the char embedding adds to a GPT training step on the CPU.

    pytest benchmarks/test_bench_gpt_step_cpu.py --benchmark-only

The study's model size (3 layers, n_embd 128, 4 heads, B=16, T=256) with a 2048-token
byte-level BPE trained on the default corpus; one step = forward, backward and AdamW
update on a batch of real text. Variants, all from the same seed:

    baseline        no char embedding
    char-cpp        + CharEmbedding(backend="cpp") (the CPU default)
    char-reference  + CharEmbedding(backend="reference")
    char-study      + the same char encoder computed the study's way (nn.LSTM over packed
                    sequences of all B*T tokens, charfast.baselines.packed_lstm)
    *-compiled      the same model under torch.compile (inductor; compiled in the warm-up)
"""

from __future__ import annotations

import pytest
import torch
from conftest import benchmark_interleaved_ratio, bpe_batch, build_gpt, compile_mode_of, gpt_train_step

from charfast import GPTConfig, TokenCharTable
from charfast.backends import why_unavailable

BATCH, SEQ_LEN, VOCAB = 16, 256, 2048
VARIANTS = ["baseline", "char-cpp", "char-reference", "char-study", "baseline-compiled", "char-cpp-compiled"]


@pytest.fixture(scope="module")
def bpe_data():
    return bpe_batch(VOCAB, BATCH, SEQ_LEN)


def build_model(variant: str, table: TokenCharTable):
    return build_gpt(
        variant, table, GPTConfig(vocab_size=table.vocab_size, block_size=SEQ_LEN, n_layer=3, n_head=4, n_embd=128)
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_train_step(benchmark, bpe_data, variant):
    if variant.startswith("char-cpp") and why_unavailable("cpp", torch.device("cpu")):
        pytest.skip(f"cpp backend unavailable: {why_unavailable('cpp', torch.device('cpu'))}")
    table, idx, targets = bpe_data
    model = build_model(variant, table)
    step = gpt_train_step(model, idx, targets, compile_mode_of(variant))
    benchmark.group = f"GPT train step, CPU, 3x128, B={BATCH} T={SEQ_LEN} V={table.vocab_size}"
    benchmark.extra_info.update(
        parameters=model.num_parameters(),
        distinct_ids=int(torch.unique(idx).numel()),
        mean_token_len=float(table.lengths[idx].float().mean()),
    )
    loss = benchmark.pedantic(step, rounds=8, warmup_rounds=5)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["", "-compiled"], ids=["eager", "compiled"])
def test_char_overhead_interleaved(benchmark, bpe_data, mode):
    """The char embedding's share of the step, with baseline and char-cpp steps alternated
    (the sequential variants above drift by 10% and more on a shared 2-core machine):
    extra_info holds the median ratio char / baseline. The timed call is one char-cpp step."""
    if why_unavailable("cpp", torch.device("cpu")):
        pytest.skip("cpp backend unavailable")
    table, idx, targets = bpe_data
    baseline, char = f"baseline{mode}", f"char-cpp{mode}"
    steps = {
        variant: gpt_train_step(build_model(variant, table), idx, targets, compile_mode_of(variant))
        for variant in (baseline, char)
    }
    benchmark.group = (
        f"GPT train step, CPU, 3x128, B={BATCH} T={SEQ_LEN}: char overhead, interleaved, "
        f"{mode.removeprefix('-') or 'eager'}"
    )
    ratio = benchmark_interleaved_ratio(benchmark, steps, char, baseline, "char_over_baseline", warmup=2)
    assert ratio < 2
