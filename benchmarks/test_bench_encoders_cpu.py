"""What each char encoder costs, side by side: the char-LSTM and the cheaper encoders of
charfast.encoders at equal parameters, on the CPU.

    pytest benchmarks/test_bench_encoders_cpu.py --benchmark-only

test_encoder_step_interleaved: the study's CPU model (4 layers, n_embd 128, 4 heads, char
128/128, B=32, T=128: charfast.train's defaults) with bpe:4096 trained on the default
corpus, one training step (forward, backward, AdamW) per arch on the same batch of real
text, every arch's step interleaved round by round. extra_info: per arch its encoder's
parameters, its forward FLOPs per distinct token (encoder_flops) and the paired ratio of its
step over the baseline's.

test_client_char_embedding_interleaved: where a client pays it, the CharEmbedding alone
(forward and backward over a nanoGPT batch: B=12, T=128 of cl100k-tokenized text,
d_model 128), each encoder at the char-LSTM's parameters, interleaved.
"""

from __future__ import annotations

import pytest
import torch
from conftest import batch_ids, bpe_batch, gpt_train_step, interleaved_times, paired_ratio

from charfast import CharEmbedding, GPTConfig, TokenCharTable
from charfast.encoders import NGRAM_SIZES, lstm_parameter_count, matched_encoder
from charfast.gpt import archs
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.model import GPT
from charfast.gpt.tokenizer import get_tiktoken

BATCH, SEQ_LEN, VOCAB = 32, 128, 4096
ARCHS = ("baseline", "char", *archs.alternatives(), "baseline-matched")
CLIENT_BATCH, CLIENT_BLOCK, D_MODEL, CHAR_DIM, HIDDEN = 12, 128, 128, 128, 128


def encoder_flops(char_emb: CharEmbedding | None, mean_chars: float) -> float:
    """Forward FLOPs (a multiply-add: 2) per distinct token of a token of `mean_chars`
    chars: the recurrence or bag, then the projection to d_model."""
    if char_emb is None:
        return 0.0
    width, d_model = char_emb.proj.in_features, char_emb.d_model
    projection = 2 * width * d_model
    encoder = char_emb.encoder
    if encoder is None:  # the LSTM: 4 gates of (input + hidden) per char
        lstm = char_emb.lstm
        return mean_chars * 2 * 4 * lstm.hidden_size * (lstm.input_size + lstm.hidden_size) + projection
    name = char_emb.encoder_name
    grams = sum(max(0.0, mean_chars + 3 - n) for n in NGRAM_SIZES)  # windows of the framed token
    if name in ("bag", "posbag"):
        return mean_chars * width + projection
    if name == "ngram":
        return grams * encoder.hashes * width + projection
    if name == "ngram-exact":
        return grams * width + projection
    if name == "cnn":
        conv = encoder.conv
        per_char = 2 * conv.kernel_size[0] * conv.in_channels * conv.out_channels
        return mean_chars * per_char + 2 * 2 * width * width + projection  # and the highway's two layers
    raise AssertionError(name)


@pytest.fixture(scope="module")
def bpe_data():
    return bpe_batch(VOCAB, BATCH, SEQ_LEN)


def test_encoder_step_interleaved(benchmark, bpe_data):
    table, idx, targets = bpe_data
    distinct = torch.unique(idx)
    mean_chars = float(table.lengths[distinct].float().mean())
    steps, models = {}, {}
    for arch in ARCHS:
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=table.vocab_size, block_size=SEQ_LEN, n_layer=4, n_head=4, n_embd=128, arch=arch)
        models[arch] = GPT(config, char_table=table)
        steps[arch] = gpt_train_step(models[arch], idx, targets, compile_mode=None)
    times = interleaved_times(steps, rounds=10, warmup=2)
    benchmark.group = f"GPT train step, CPU, 4x128, B={BATCH} T={SEQ_LEN} V={VOCAB}: encoders, interleaved"
    benchmark.extra_info.update(distinct_ids=int(distinct.numel()), mean_chars=round(mean_chars, 3))
    for arch, model in models.items():
        part = model.char_emb if model.char_emb is not None else model.matched_emb
        benchmark.extra_info[arch] = {
            "encoder_parameters": 0 if part is None else sum(p.numel() for p in part.parameters()),
            "flops_per_distinct_token": round(encoder_flops(model.char_emb, mean_chars)),
            "over_baseline": round(paired_ratio(times, arch, "baseline"), 4),
        }
    loss = benchmark.pedantic(steps["char-bag"], rounds=3)
    assert torch.isfinite(loss)


@pytest.fixture(scope="module")
def client_batch():
    encoding = get_tiktoken("cl100k_base")
    text = "\n".join(body for _, body in shakespeare_documents()[:4])
    tokens = torch.tensor(encoding.encode_ordinary(text))
    return TokenCharTable.from_tiktoken(encoding), batch_ids(tokens, CLIENT_BATCH, CLIENT_BLOCK)


def test_client_char_embedding_interleaved(benchmark, client_batch):
    table, idx = client_batch
    budget = lstm_parameter_count(table.n_chars, CHAR_DIM, HIDDEN, D_MODEL)
    steps, refused = {}, {}
    for arch in ("char", *archs.alternatives()):
        encoder, scale = archs.get(arch).encoder, archs.get(arch).budget
        if encoder is None:
            continue
        torch.manual_seed(0)
        if encoder == "lstm":
            module = CharEmbedding(table, D_MODEL, char_dim=CHAR_DIM, hidden=HIDDEN)
        else:
            try:
                width, sizes = matched_encoder(encoder, table, D_MODEL, round(scale * budget), CHAR_DIM)
            except ValueError as err:  # ngram-exact: cl100k has more n-grams than the budget buys rows
                refused[arch] = str(err)
                continue
            module = CharEmbedding(
                table, D_MODEL, char_dim=CHAR_DIM, hidden=width, encoder=encoder, encoder_sizes=sizes
            )

        def step(module=module):
            module.zero_grad(set_to_none=True)
            module(idx).square().mean().backward()

        steps[arch] = step
    times = interleaved_times(steps, rounds=10, warmup=2)
    benchmark.group = f"CharEmbedding forward + backward, CPU, nanoGPT batch B={CLIENT_BATCH} T={CLIENT_BLOCK}, cl100k"
    benchmark.extra_info["refused"] = refused
    for arch in steps:
        benchmark.extra_info[arch] = {
            "median_ms": round(1e3 * sorted(times[arch])[len(times[arch]) // 2], 3),
            "over_lstm": round(paired_ratio(times, arch, "char"), 4),
        }
    benchmark.pedantic(steps["char-bag"], rounds=3)
