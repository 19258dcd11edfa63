"""Generation: the cache gives what recomputing the whole prefix gives, the folded token
table equals the per-id embeddings, streaming, the window restart and bad arguments."""

import pytest
import torch
from backend_cases import random_idx, random_table

from charfast import GPT, GPTConfig
from charfast.gpt import archs
from charfast.gpt.generation import GenerationCache

ARCHS = archs.names()

VOCAB, N_CHARS, BLOCK = 40, 17, 24


@pytest.fixture(params=ARCHS)
def model(request):
    small = dict(n_layer=2, n_head=2, n_embd=24, char_dim=8, char_hidden=12, char_backend="reference")
    config = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, arch=request.param, **small)
    return GPT(config, char_table=random_table(VOCAB, 6, N_CHARS)).eval()


def test_token_table_is_every_ids_input_embedding_without_position(model):
    with torch.no_grad():
        per_id = torch.cat([model.embed(torch.tensor([[i]]))[0] for i in range(VOCAB)]) - model.wpe.weight[0]
    torch.testing.assert_close(model.token_table(), per_id, rtol=1e-6, atol=1e-6)


def test_cached_forward_gives_the_logits_of_the_whole_prefix(model):
    idx = random_idx(VOCAB, (2, 15))
    with torch.no_grad():
        full = model(idx)[0]  # [2, 15, V]
        cache = GenerationCache(model.config.n_layer, BLOCK, token_table=model.token_table())
        steps = [model(idx[:, :9], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(9, 15)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 15


def test_generate_with_and_without_cache_agree_while_the_sequence_fits(model):
    prompt = random_idx(VOCAB, (2, 5))
    cached = model.generate(prompt, BLOCK - 5, temperature=0)
    recomputed = model.generate(prompt, BLOCK - 5, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)
    torch.manual_seed(3)
    sampled = model.generate(prompt, 10, temperature=0.9, top_k=7)
    torch.manual_seed(3)
    assert torch.equal(sampled, model.generate(prompt, 10, temperature=0.9, top_k=7, use_cache=False))


def test_past_the_window_the_cache_restarts_from_its_newer_half(model):
    prompt = random_idx(VOCAB, (1, 20))
    out = model.generate(prompt, 3 * BLOCK, temperature=0)
    assert out.shape == (1, 20 + 3 * BLOCK)
    # Replay the policy: the cache holds the last `cached` tokens; when the next ones do not
    # fit, it restarts from the newer half of the window. Each token is the greedy choice
    # given exactly the tokens in the cache.
    cached, pending = 0, 20
    with torch.no_grad():
        for t in range(20, out.shape[1]):
            if cached + pending > BLOCK:
                cached, pending = 0, BLOCK // 2
            cached, pending = cached + pending, 1
            assert int(model(out[:, t - cached : t])[0][0, -1].argmax()) == int(out[0, t]), t


def test_stream_yields_each_token_without_grad(model):
    prompt = random_idx(VOCAB, (1, 4))
    stream = model.generate_stream(prompt, 5, temperature=0)
    tokens = []
    for token in stream:  # the caller's grad mode is on: the steps must not build a graph
        assert token.shape == (1, 1) and not token.requires_grad
        tokens.append(token)
    assert torch.equal(torch.cat([prompt, *tokens], dim=1), model.generate(prompt, 5, temperature=0))
    assert model.generate(prompt, 0).shape == (1, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
        (dict(max_new_tokens=2.5), "max_new_tokens must be an int >= 0"),
        (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
        (dict(temperature=float("inf")), "temperature must be a finite number >= 0"),
        (dict(temperature="0.8"), "temperature must be a finite number >= 0, got '0.8'"),
        (dict(temperature=True), "temperature must be a finite number >= 0"),
        (dict(top_k=0), "top_k must be a positive int or None"),
        (dict(top_k=True), "top_k must be a positive int or None"),
    ],
)
def test_bad_sampling_arguments(model, kwargs, message):
    arguments = dict(max_new_tokens=3, temperature=1.0, top_k=None) | kwargs
    with pytest.raises(ValueError, match=message):
        model.generate_stream(random_idx(VOCAB, (1, 4)), **arguments)  # raised at the call, not at the first token


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_as_greedy(model, temperature):
    prompt = random_idx(VOCAB, (2, 5))
    for top_k in (None, 3):
        sampled = model.generate(prompt, 8, temperature=temperature, top_k=top_k)
        assert torch.equal(sampled, model.generate(prompt, 8, temperature=0))


def test_cache_bounds(model):
    cache = GenerationCache(model.config.n_layer, BLOCK)
    with torch.no_grad():
        model(random_idx(VOCAB, (1, 4)), cache=cache)
        with pytest.raises(ValueError, match="must start at position 0"):
            model(random_idx(VOCAB, (1, 2)), cache=cache)
        with pytest.raises(ValueError, match="up to 25 exceed block_size 24"):
            model(random_idx(VOCAB, (1, 21)), cache=cache)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 2)
