"""The LM head's loss in chunks of rows (charfast.gpt.chunked_loss): the value and the
gradients of the unchunked cross-entropy, whatever the chunk; GPT.forward takes it on the
CPU for training where the logits outgrow a chunk, and leaves a small vocabulary's loss as
it was to the bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charfast.gpt import chunked_loss
from charfast.gpt.chunked_loss import chunked_head_loss
from charfast.gpt.cross_entropy import IGNORE_INDEX
from charfast.gpt.model import GPT, GPTConfig


def _reference(hidden, weight, targets):
    logits = (hidden @ weight.T).float()
    return F.cross_entropy(logits.reshape(-1, weight.shape[0]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_gradients_equal_the_unchunked_loss(rows_per_chunk, dtype):
    torch.manual_seed(0)
    vocab = 300
    hidden = torch.randn(3, 21, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, 16, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, vocab, (3, 21))
    targets[0, :4] = IGNORE_INDEX
    expected = _reference(hidden, weight, targets)
    expected_grads = torch.autograd.grad(expected * 3, (hidden, weight))
    loss = chunked_head_loss(hidden, weight, targets, chunk_bytes=4 * vocab * rows_per_chunk)
    grads = torch.autograd.grad(loss * 3, (hidden, weight))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_every_target_ignored_is_nan_as_torchs():
    hidden, weight = torch.randn(5, 8), torch.randn(50, 8)
    targets = torch.full((5,), IGNORE_INDEX)
    assert torch.isnan(chunked_head_loss(hidden, weight, targets)) and torch.isnan(_reference(hidden, weight, targets))


def _model(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16, arch="baseline"))


def test_training_forward_chunks_a_large_head_and_gives_the_same_loss_and_gradients(monkeypatch):
    monkeypatch.setattr(chunked_loss, "CHUNK_BYTES", 4 * 2000 * 5)  # 5 rows a chunk at vocab 2000
    model = _model(2000)
    x, y = torch.randint(0, 2000, (2, 16)), torch.randint(0, 2000, (2, 16))
    logits, loss = model(x, y)
    expected = [g.clone() for g in torch.autograd.grad(loss, list(model.parameters()))]
    calls = []
    real = chunked_loss._ChunkedHeadLoss.apply
    monkeypatch.setattr(chunked_loss._ChunkedHeadLoss, "apply", lambda *a: calls.append(a[3]) or real(*a))
    none, chunked = model(x, y, return_logits=False)
    assert none is None and calls == [5]  # chunked, 5 rows at a time
    torch.testing.assert_close(chunked, loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(torch.autograd.grad(chunked, list(model.parameters())), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_small_vocabularys_loss_is_unchanged_to_the_bit():
    model = _model(300)
    x, y = torch.randint(0, 300, (2, 16)), torch.randint(0, 300, (2, 16))
    assert torch.equal(model(x, y, return_logits=False)[1], model(x, y)[1])


def test_the_memory_bound_counts_one_chunk_of_logits_on_the_cpu():
    from charfast.gpt.config import TrainConfig
    from charfast.gpt.memory_need import least_training_needs

    config = TrainConfig(tokenizer="cl100k_base")  # 32 x 128 tokens of a 100k vocabulary: 1.6 GB of logits
    whole = {need.what: need.bytes for need in least_training_needs(config, 100_277)}
    chunked = {need.what: need.bytes for need in least_training_needs(config, 100_277, chunked_head=True)}
    assert whole["one micro-batch's logits"] == 4 * 32 * 128 * 100_277
    assert chunked["one micro-batch's logits"] <= chunked_loss.CHUNK_BYTES
