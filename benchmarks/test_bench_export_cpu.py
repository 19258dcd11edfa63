"""Serving an exported model: generation speed in transformers of a char-aware GPT exported
by charfast.export against the exported baseline, interleaved.

    pytest benchmarks/test_bench_export_cpu.py --benchmark-only

The default training model's shape (4 layers, n_embd 128, char_dim = char_hidden = 128)
with block_size 512, randomly initialised (speed does not depend on training), exported
with the tensors and config charfast.export writes (gpt2_state_dict, gpt2_config) into
transformers' GPT2LMHeadModel; batch 1, a 16-token prompt from the corpus, greedy, 128 new
tokens. The char model's fold happened at export: both are the same GPT-2, so the aim is a
ratio of 1 within noise, which a second copy of the baseline, timed in the same rounds,
measures. Vocabularies: the 512-rank corpus BPE and cl100k.
"""

from __future__ import annotations

import pytest
import torch
from conftest import benchmark_interleaved_ratio

from charfast import GPT, GPTConfig, TokenCharTable
from charfast.gpt.bpe import end_of_text_id
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.export import gpt2_config, gpt2_state_dict
from charfast.gpt.tokenizer import get_tokenizer

transformers = pytest.importorskip("transformers")

PROMPT_TOKENS, BLOCK, NEW_TOKENS = 16, 512, 128
VOCABS = {"bpe512": "bpe:512", "cl100k": "cl100k_base"}


def exported(model: GPT, encoding):
    """transformers' GPT-2 holding what charfast.export writes for `model`."""
    tensors, tied = gpt2_state_dict(model)
    config = gpt2_config(model, end_of_text_id(encoding), tied)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    hf.load_state_dict(tensors, strict=False)  # GPT-2's causal-mask buffers are its own
    hf.generation_config.eos_token_id = None  # a fixed number of new tokens
    return hf.eval()


@pytest.mark.parametrize("vocab", VOCABS)
def test_exported_generation_char_vs_baseline(benchmark, vocab):
    texts = [text for _, text in shakespeare_documents()]
    encoding = get_tokenizer(VOCABS[vocab], lambda: texts)
    table = TokenCharTable.from_tiktoken(encoding)
    models = {}
    for name, arch in (("baseline", "baseline"), ("char", "char"), ("baseline-again", "baseline")):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=encoding.n_vocab, block_size=BLOCK, arch=arch), char_table=table)
        models[name] = exported(model, encoding)
    prompt = torch.tensor([encoding.encode_ordinary(texts[0][:400])[:PROMPT_TOKENS]])

    def generation(model):
        def step():
            with torch.no_grad():
                return model.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0)

        return step

    steps = {arch: generation(model) for arch, model in models.items()}
    benchmark.group = f"exported generation, cpu, {vocab}, 4x128: {NEW_TOKENS} new tokens, char vs baseline"
    ratio = benchmark_interleaved_ratio(benchmark, steps, "char", "baseline", "char_over_baseline", warmup=1, rounds=15)
    # The noise: the baseline against a second copy of itself, timed in the same rounds.
    medians = {name: benchmark.extra_info[f"{name}_median_ms"] for name in steps}
    benchmark.extra_info["baseline_again_over_baseline"] = round(medians["baseline-again"] / medians["baseline"], 4)
    benchmark.extra_info.update(
        {
            f"{arch}_tokens_per_s": round(NEW_TOKENS / (benchmark.extra_info[f"{arch}_median_ms"] / 1e3))
            for arch in steps
        }
    )
    assert ratio < 1.5
