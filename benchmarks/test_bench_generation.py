"""Generation speed: char-aware vs baseline, and the KV cache vs recomputing the prefix.

    pytest benchmarks/test_bench_generation.py --benchmark-only

The default training model's shape (4 layers, n_embd 128, char_dim = char_hidden = 128)
with block_size 512, randomly initialised (speed does not depend on training), batch 1, a
16-token prompt from the corpus, top-k sampling (temperature 0.8, top_k 40). The variants
alternate round by round; extra_info holds the median ratio and tokens/s.

- char vs baseline: GPT.generate folds the char embedding into the token table once per
  call, so a char-aware token should cost what a baseline token costs (the aim: within 1%).
  Vocabularies: the 512-rank corpus BPE, and cl100k (100k ids: the fold is the largest).
- KV cache vs recomputing the whole prefix for every token, at 256 new tokens.
"""

from __future__ import annotations

import pytest
import torch
from conftest import benchmark_interleaved_ratio

from charfast import GPT, GPTConfig, TokenCharTable
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.tokenizer import get_tokenizer

PROMPT_TOKENS, BLOCK = 16, 512
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]
VOCABS = {"bpe512": ("bpe:512", 256), "cl100k": ("cl100k_base", 64)}  # name -> (tokenizer, new tokens)


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return [text for _, text in shakespeare_documents()]


def models_and_prompt(tokenizer: str, texts: list[str], device: str):
    encoding = get_tokenizer(tokenizer, lambda: texts)
    table = TokenCharTable.from_tiktoken(encoding)
    models = {}
    for arch in ("baseline", "char"):
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=encoding.n_vocab, block_size=BLOCK, arch=arch)
        models[arch] = GPT(config, char_table=table).to(device).eval()
    prompt = torch.tensor([encoding.encode_ordinary(texts[0][:400])[:PROMPT_TOKENS]], device=device)
    return models, prompt


def generation(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool):
    """One call of generate() as a benchmark step (seeded, synchronised)."""

    def step():
        torch.manual_seed(1)
        out = model.generate(prompt, new_tokens, temperature=0.8, top_k=40, use_cache=use_cache)
        if prompt.is_cuda:
            torch.cuda.synchronize()
        return out

    return step


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("device", DEVICES)
def test_generation_char_vs_baseline(benchmark, corpus_texts, device, vocab):
    tokenizer, new_tokens = VOCABS[vocab]
    models, prompt = models_and_prompt(tokenizer, corpus_texts, device)
    steps = {arch: generation(model, prompt, new_tokens, use_cache=True) for arch, model in models.items()}
    benchmark.group = f"generation, {device}, {vocab}, 4x128: {new_tokens} new tokens, char vs baseline, interleaved"
    ratio = benchmark_interleaved_ratio(benchmark, steps, "char", "baseline", "char_over_baseline", warmup=1, rounds=7)
    benchmark.extra_info.update(
        {
            f"{arch}_tokens_per_s": round(new_tokens / (benchmark.extra_info[f"{arch}_median_ms"] / 1e3))
            for arch in steps
        }
    )
    assert ratio < 1.5


@pytest.mark.parametrize("device", DEVICES)
def test_generation_kv_cache_vs_recompute(benchmark, corpus_texts, device):
    tokenizer, new_tokens = VOCABS["bpe512"]
    models, prompt = models_and_prompt(tokenizer, corpus_texts, device)
    steps = {
        "kv-cache": generation(models["char"], prompt, new_tokens, use_cache=True),
        "recompute": generation(models["char"], prompt, new_tokens, use_cache=False),
    }
    benchmark.group = f"generation, {device}, bpe512, 4x128, char: {new_tokens} new tokens, KV cache vs recompute"
    ratio = benchmark_interleaved_ratio(
        benchmark, steps, "kv-cache", "recompute", "kv_cache_over_recompute", warmup=1, rounds=3
    )
    benchmark.extra_info["recompute_over_kv_cache"] = round(1 / ratio, 2)
    assert ratio < 1
