"""The cheap char encoders (charfast.encoders) inside CharEmbedding: each one's values and
gradients against a reference written here token by token from the definitions, the
CharEmbedding contract (once per step, the inference cache, id checks, torch.compile),
and the widths that match a parameter budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from charfast import CharEmbedding
from charfast.encoder_names import ENCODERS
from charfast.encoders import NGRAM_SIZES, lstm_parameter_count, matched_encoder
from charfast.table import TokenCharTable

CHEAP = [e for e in ENCODERS if e != "lstm"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz "
WORDS = ["a", "ab", "ba", "abc", "", "hello", "the cat", "zz", "abracadabra", "q", "mississippi river"]
SIZES = {"ngram": {"buckets": 97, "hashes": 2}, "posbag": {"positions": 4}, "cnn": {"kernel": 3}}


@pytest.fixture
def table():
    return TokenCharTable.from_strings(WORDS, ALPHABET)


def make(table, encoder, d_model=6, char_dim=5, hidden=7):
    torch.manual_seed(0)
    return CharEmbedding(
        table, d_model, char_dim=char_dim, hidden=hidden, encoder=encoder, encoder_sizes=SIZES.get(encoder)
    ).double()


# ---------------------------------------------------------------- the reference, token by token
def _framed(chars: list[int], n_chars: int) -> list[int]:
    return [n_chars, *chars, n_chars + 1]


def _ngrams(chars: list[int], n_chars: int) -> list[tuple[int, ...]]:
    framed = _framed(chars, n_chars)
    return [tuple(framed[i : i + n]) for n in NGRAM_SIZES for i in range(len(framed) - n + 1)]


def _hash(gram: tuple[int, ...], multiplier: int) -> int:
    code = len(gram)
    for c in gram:
        code = (code * multiplier + c + 1) % (2**31 - 1)
    return code


def _mean(rows: list[torch.Tensor], width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.stack(rows).mean(0) if rows else like.new_zeros(width)


def reference_state(module: CharEmbedding, chars: list[int], built_from: TokenCharTable) -> torch.Tensor:
    """The encoder's vector of one token (chars: its char ids), from the definitions
    (ngram-exact's rows: the n-grams of the table it was `built_from`)."""
    enc, name = module.encoder, module.encoder_name
    n_chars = module.table.n_chars
    if name == "bag":
        return _mean([enc.emb.weight[c] for c in chars], enc.width, enc.emb.weight)
    if name == "posbag":
        rows = [enc.emb.weight[c * enc.positions + min(i, enc.positions - 1)] for i, c in enumerate(chars)]
        return _mean(rows, enc.width, enc.emb.weight)
    if name == "ngram":
        from charfast.encoders import _HASH_MULTIPLIERS

        grams = _ngrams(chars, n_chars)
        rows = [enc.emb[_hash(g, m) % enc.buckets] for g in grams for m in _HASH_MULTIPLIERS[: enc.hashes]]
        return _mean(rows, enc.width, enc.emb)
    if name == "ngram-exact":
        grams = {g for token in range(built_from.vocab_size) for g in _ngrams(_chars(built_from, token), n_chars)}
        known = sorted(grams, key=lambda g: _code(g, n_chars))
        index = {g: i for i, g in enumerate(known)}
        rows = [enc.emb[index.get(g, len(known))] for g in _ngrams(chars, n_chars)]
        return _mean(rows, enc.width, enc.emb)
    if name == "cnn":
        if chars:
            x = enc.emb.weight[chars].T[None]  # [1, D, l]
            pooled = F.relu(F.conv1d(x, enc.conv.weight, enc.conv.bias, padding=enc.conv.padding)).amax(2)[0]
        else:  # no chars: a pool of zeros
            pooled = enc.emb.weight.new_zeros(enc.width)
        gate = torch.sigmoid(enc.gate(pooled))
        return gate * F.relu(enc.transform(pooled)) + (1 - gate) * pooled
    raise AssertionError(name)


def _code(gram: tuple[int, ...], n_chars: int) -> int:
    code = len(gram)
    for c in gram:
        code = code * (n_chars + 2) + c
    return code


def _chars(table: TokenCharTable, token: int) -> list[int]:
    return table.chars[token, : int(table.lengths[token])].tolist()


def reference(module: CharEmbedding, idx: torch.Tensor, built_from: TokenCharTable | None = None) -> torch.Tensor:
    built_from = module.table if built_from is None else built_from
    rows = [module.proj(reference_state(module, _chars(module.table, int(i)), built_from)) for i in idx.reshape(-1)]
    return torch.stack(rows).view(*idx.shape, -1)


# ---------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("encoder", CHEAP)
def test_values_and_gradients_match_the_reference(table, encoder):
    module = make(table, encoder)
    idx = torch.tensor([[0, 1, 2, 3, 4, 5], [10, 9, 8, 7, 6, 1], [4, 4, 2, 2, 10, 0]])
    weights = torch.randn(*idx.shape, module.d_model, dtype=torch.float64)
    (module(idx) * weights).sum().backward()
    ours = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    expected = reference(module, idx)
    (expected * weights).sum().backward()
    torch.testing.assert_close(module(idx), expected, rtol=1e-12, atol=1e-12)
    for name, p in module.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_the_order_blind_encoders_are_and_the_others_are_not(table):
    """bag sees a multiset of chars; posbag, the n-grams and the CNN see their order."""
    ab, ba = torch.tensor([1]), torch.tensor([2])  # "ab", "ba"
    for encoder in CHEAP:
        module = make(table, encoder)
        same = torch.allclose(module(ab), module(ba))
        assert same == (encoder == "bag"), encoder


def test_hashed_ngrams_collide_and_the_exact_arm_does_not():
    words = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(4)) for i in range(200)]
    table = TokenCharTable.from_strings(words, ALPHABET)
    hashed = CharEmbedding(table, 4, hidden=3, encoder="ngram", encoder_sizes={"buckets": 16, "hashes": 1})
    exact = CharEmbedding(table, 4, hidden=3, encoder="ngram-exact")
    grams = {g for t in range(table.vocab_size) for g in _ngrams(_chars(table, t), table.n_chars)}
    assert len(exact.encoder.vocabulary) == len(grams) > 16  # a row each, where 16 buckets must share
    codes = {_hash(g, 1_000_003) % 16 for g in grams}
    assert len(codes) <= 16 < len(grams)
    del hashed


def test_an_ngram_the_table_lacks_shares_the_last_row(table):
    module = make(table, "ngram-exact")
    module.table = TokenCharTable.from_strings(["xyz", "a"], ALPHABET)  # "xyz": n-grams the first table lacks
    ids = torch.tensor([0, 1])
    torch.testing.assert_close(module(ids), reference(module, ids, built_from=table))


# ---------------------------------------------------------------- the CharEmbedding contract
@pytest.mark.parametrize("encoder", CHEAP)
def test_once_per_step_equals_a_backward_per_micro_batch(table, encoder):
    batches = [torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[6, 7, 8], [9, 10, 1]])]
    per_batch, once = make(table, encoder), make(table, encoder)
    for x in batches:
        (per_batch(x).square().sum() / len(batches)).backward()
    with once.once_per_step(batches):
        for x in batches:
            (once(x).square().sum() / len(batches)).backward()
    for (name, p), q in zip(per_batch.named_parameters(), once.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("encoder", CHEAP)
def test_the_inference_cache_answers_as_the_forward_does(table, encoder):
    module = make(table, encoder)
    idx = torch.arange(table.vocab_size).view(1, -1)
    fresh = module(idx).detach()
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(idx), fresh)
        assert module._cache is not None  # the vocabulary's rows, computed once
        torch.testing.assert_close(module.vocabulary_output(), fresh[0])


@pytest.mark.parametrize("encoder", CHEAP)
def test_ids_outside_the_table_are_named_or_nan(table, encoder):
    module = make(table, encoder)
    with pytest.raises(ValueError, match=rf"token id {table.vocab_size} is out of range \[0, {table.vocab_size}\)"):
        module(torch.tensor([0, table.vocab_size]))
    module.check_ids = False
    out = module(torch.tensor([0, -1, table.vocab_size]))
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1:]).all()


@pytest.mark.parametrize("encoder", CHEAP)
def test_a_compiled_forward_and_backward_match_eager(table, encoder):
    module = make(table, encoder)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    idx = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 10]])
    (module(idx).sum()).backward()
    eager = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    out = compiled(idx)
    out.sum().backward()
    torch.testing.assert_close(out, module(idx))
    for p, grad in zip(module.parameters(), eager):
        torch.testing.assert_close(p.grad, grad)


def test_bad_encoder_arguments_are_named(table):
    with pytest.raises(ValueError, match="encoder must be one of lstm, bag"):
        CharEmbedding(table, 4, encoder="gru")
    with pytest.raises(ValueError, match="backend 'cpp' is the char-LSTM's; encoder 'bag' takes none"):
        CharEmbedding(table, 4, encoder="bag", backend="cpp")
    with pytest.raises(ValueError, match="encoder_sizes .* for 'bag'"):
        CharEmbedding(table, 4, encoder="bag", encoder_sizes={"buckets": 8})
    with pytest.raises(ValueError, match="encoder_sizes are for the other encoders"):
        CharEmbedding(table, 4, encoder_sizes={"buckets": 8})


# ---------------------------------------------------------------- widths matched to a budget
@pytest.mark.parametrize("encoder", CHEAP)
@pytest.mark.parametrize("d_model, char_dim, hidden", [(128, 128, 128), (768, 128, 256)], ids=["cpu", "gpt2-small"])
def test_matched_widths_come_within_one_percent_of_the_lstms_parameters(encoder, d_model, char_dim, hidden):
    table = TokenCharTable.from_strings(
        [ALPHABET[i % 26] * (1 + i % 5) + ALPHABET[i % 7] for i in range(300)], ALPHABET
    )
    budget = lstm_parameter_count(table.n_chars, char_dim, hidden, d_model)
    width, sizes = matched_encoder(encoder, table, d_model, budget, char_dim)
    module = CharEmbedding(table, d_model, char_dim=char_dim, hidden=width, encoder=encoder, encoder_sizes=sizes)
    assert math.isclose(sum(p.numel() for p in module.parameters()), budget, rel_tol=0.01)


def test_a_budget_no_width_can_match_is_refused_naming_it():
    words = ["".join(ALPHABET[(i * j) % 26] for j in range(6)) for i in range(400)]
    table = TokenCharTable.from_strings(words, ALPHABET)
    with pytest.raises(ValueError, match=r"encoder 'ngram-exact' cannot match a budget of 100 parameters within 10%"):
        matched_encoder("ngram-exact", table, 8, 100, 4)
