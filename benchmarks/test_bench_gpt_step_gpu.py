"""What the char embedding adds to a GPT-2-small training step on a GPU.

    pytest benchmarks/test_bench_gpt_step_gpu.py --benchmark-only

The `--preset gpt2-small` model of charfast.train (12 layers, n_embd 768, 12 heads,
T=1024, cl100k vocabulary, char_dim 128, char-LSTM hidden 256), B=16 windows of the
cl100k-tokenized default corpus; one step = forward and backward under bf16 autocast and
a fused AdamW update, as charfast.train takes it. Variants, all from the same seed:

    baseline        no char embedding
    char-triton     + CharEmbedding(backend="triton") (the CUDA default)
    char-study      + the same char encoder computed the study's way (nn.LSTM/cuDNN over
                    packed sequences of all B*T tokens, charfast.baselines.packed_lstm)
    *-compiled      the same model under torch.compile (inductor; compiled in the warm-up)
    *-cudagraphs    the same under torch.compile(mode="reduce-overhead"): the forward and
                    backward replay as CUDA graphs, so the host's launches cost nothing

test_char_overhead_interleaved alternates baseline and char-triton steps and records the
ratio of their medians, eager, compiled and in CUDA graphs.
test_grad_accum_char_overhead_interleaved takes the preset's optimizer step (4
micro-batches of B=16), compiled: baseline, char per micro-batch and char once per step
(CharEmbedding.once_per_step, what charfast.train does).
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    GPT2_SMALL,
    benchmark_interleaved_ratio,
    build_gpt,
    compile_mode_of,
    gpt2_small_inputs,
    gpt_optimizer_step,
    gpt_train_step,
    interleaved_times,
    paired_ratio,
)

from charfast.backends.triton import KERNELS_INTERPRETED

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or KERNELS_INTERPRETED,
    reason="GPU benchmark: needs CUDA and compiled Triton (TRITON_INTERPRET unset)",
)

BATCH = 16
VARIANTS = [
    "baseline",
    "char-triton",
    "char-study",
    "baseline-compiled",
    "char-triton-compiled",
    "baseline-cudagraphs",
    "char-triton-cudagraphs",
]


@pytest.fixture(scope="module")
def gpt2_small(cl100k_table, shakespeare_tokens):
    return gpt2_small_inputs(cl100k_table, shakespeare_tokens, BATCH)


def group_name(what: str) -> str:
    return (
        f"GPT train step{what}, {torch.cuda.get_device_name()}, {GPT2_SMALL.n_layer}x{GPT2_SMALL.n_embd}, "
        f"B={BATCH} T={GPT2_SMALL.block_size} bf16 autocast"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_train_step(benchmark, cl100k_table, gpt2_small, variant):
    config, idx, targets = gpt2_small
    model = build_gpt(variant, cl100k_table, config).cuda()
    step = gpt_train_step(model, idx, targets, compile_mode_of(variant))
    benchmark.group = group_name("")
    benchmark.extra_info.update(
        parameters=model.num_parameters(),
        distinct_ids=int(torch.unique(idx).numel()),
        mean_token_len=float(cl100k_table.lengths[idx.cpu()].float().mean()),
        tokens_per_step=idx.numel(),
    )
    loss = benchmark.pedantic(step, rounds=10, warmup_rounds=3)
    benchmark.extra_info["tokens_per_s"] = round(idx.numel() / benchmark.stats.stats.median)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["", "-compiled", "-cudagraphs"], ids=["eager", "compiled", "cudagraphs"])
def test_char_overhead_interleaved(benchmark, cl100k_table, gpt2_small, mode):
    """The char embedding's share of the step: extra_info holds the median ratio
    char-triton / baseline with the two alternated. The timed call is one char step."""
    config, idx, targets = gpt2_small
    baseline, char = f"baseline{mode}", f"char-triton{mode}"
    steps = {
        variant: gpt_train_step(build_gpt(variant, cl100k_table, config).cuda(), idx, targets, compile_mode_of(variant))
        for variant in (baseline, char)
    }
    benchmark.group = group_name(f": char overhead, interleaved, {mode.removeprefix('-') or 'eager'}")
    ratio = benchmark_interleaved_ratio(benchmark, steps, char, baseline, "char_over_baseline", warmup=3)
    assert ratio < 2


def test_grad_accum_char_overhead_interleaved(benchmark, cl100k_table, shakespeare_tokens):
    """The preset's optimizer step: 4 micro-batches of B=16, compiled. extra_info holds each
    char variant's overhead over the baseline (paired per round): char-each runs the char
    embedding per micro-batch, char-once once per step. Target: char-once <= +2%."""
    k = GPT2_SMALL.grad_accum
    config, idx, targets = gpt2_small_inputs(cl100k_table, shakespeare_tokens, BATCH * k)
    micro_batches = list(zip(idx.chunk(k), targets.chunk(k)))
    models = {
        name: build_gpt(model, cl100k_table, config).cuda()
        for name, model in (("baseline", "baseline"), ("char-each", "char-triton"), ("char-once", "char-triton"))
    }
    steps = {
        name: gpt_optimizer_step(model, micro_batches, "default", once_per_step=name == "char-once")
        for name, model in models.items()
    }
    times = interleaved_times(steps, rounds=8, warmup=3)
    benchmark.group = group_name(f": optimizer step of {k} micro-batches, compiled, char once per step")
    for name in ("char-each", "char-once"):
        benchmark.extra_info[f"{name}_over_baseline"] = round(paired_ratio(times, name, "baseline"), 4)
    benchmark.extra_info.update(
        {f"{name}_median_ms": round(1e3 * sorted(t)[len(t) // 2], 2) for name, t in times.items()}
    )
    benchmark.pedantic(steps["char-once"], rounds=2, warmup_rounds=0)
