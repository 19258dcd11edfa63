"""A study fine-tuning step on the CPU: the LM head on every position vs on the answers only.

    pytest benchmarks/test_bench_finetune_cpu.py --benchmark-only

The study's CPU model (4 layers, n_embd 128, char arch on the cpp backend) with a
byte-level BPE of 512 or 8192 ranks trained on the default corpus; one step = forward,
backward and AdamW update on a batch of 32 task examples (the small preset's four tasks
mixed, words of the corpus), the loss on the answer tokens only. Variants, alternated
round by round on the same batches:

    full-head         GPT.forward: logits [B, T, V] at every position, ignored ones masked
    answer-positions  charfast.study.finetune.answer_loss (GPT.logits_at_targets): logits [N, V]
                      at the N answer positions only
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import benchmark_interleaved_ratio, build_gpt

from charfast import GPTConfig, TokenCharTable
from charfast.backends import why_unavailable
from charfast.gpt.bpe import train_bpe
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.model import IGNORE_INDEX
from charfast.study.finetune import answer_loss, example_stream
from charfast.study.presets import SMALL_TASKS
from charfast.study.task_data import answer_masked_batch, encode_example
from charfast.study.words import word_counts

BATCH, BLOCK_SIZE, N_BATCHES = 32, 128, 4


@pytest.fixture(scope="module", params=[512, 8192], ids=lambda v: f"bpe{v}")
def task_batches(request):
    """(table, [(x, y)]): N_BATCHES answer-masked batches of task examples, [B, T] each."""
    documents = shakespeare_documents()
    encoding = train_bpe([body for _, body in documents], request.param)  # cached after the first run
    stream = example_stream(sorted(word_counts(documents)), SMALL_TASKS, seed=0)
    batches = [
        answer_masked_batch([encode_example(encoding, next(stream)) for _ in range(BATCH)], BLOCK_SIZE)
        for _ in range(N_BATCHES)
    ]
    return TokenCharTable.from_tiktoken(encoding), batches


def finetune_step(model, batches: list, answers_only: bool):
    """One AdamW step per call, cycling through `batches`; returns the loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cycle = itertools.cycle(batches)

    def step():
        x, y = next(cycle)
        if answers_only:
            loss = answer_loss(model, x, y)
        else:
            loss = model(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def test_answer_positions_vs_full_head_interleaved(benchmark, task_batches):
    """extra_info: the median ratio answer-positions / full-head. The timed call is one
    answer-positions step."""
    if why_unavailable("cpp", torch.device("cpu")):
        pytest.skip("cpp backend unavailable")
    table, batches = task_batches
    config = GPTConfig(vocab_size=table.vocab_size, block_size=BLOCK_SIZE, n_layer=4, n_head=4, n_embd=128)
    steps = {
        name: finetune_step(build_gpt("char-cpp", table, config), batches, answers_only=name == "answer-positions")
        for name in ("full-head", "answer-positions")
    }
    x, y = batches[0]
    benchmark.group = f"study fine-tuning step, CPU, 4x128, B={BATCH} V={table.vocab_size}: LM head, interleaved"
    benchmark.extra_info.update(
        mean_positions=float(sum(b[0].numel() for b in batches) / len(batches)),
        answer_share=round(float((y != IGNORE_INDEX).float().mean()), 3),
    )
    ratio = benchmark_interleaved_ratio(
        benchmark, steps, "answer-positions", "full-head", "answers_over_full", warmup=3
    )
    assert ratio < 1.2  # never a slowdown beyond this machine's noise
