"""Fuzz: random tables, ids, edits and settings through every backend, in training and
through the inference cache. Each case must give the reference's numbers on valid input,
NaN rows or a clear ValueError on invalid input, and never crash the process.

CHARFAST_FUZZ_CASES sets the number of cases (CI: 240; e.g. 5000 for a long run).
"""

import os
import random

import pytest
import torch
from backend_cases import outputs_and_grads

from charfast import CharEmbedding, TokenCharTable

CASES = int(os.environ.get("CHARFAST_FUZZ_CASES", "240"))
BACKENDS = ["reference", "cpp"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else [])
ID_DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8]


def _random_table(rng: random.Random) -> TokenCharTable:
    vocab, width = rng.randint(1, 40), rng.randint(1, 12)
    n_chars = rng.choice([1, 2, 7, 256, 300])
    lengths = torch.tensor([rng.randint(0, width) for _ in range(vocab)])
    chars = torch.tensor([[rng.randrange(n_chars) for _ in range(width)] for _ in range(vocab)])
    return TokenCharTable(chars, lengths, n_chars, name="fuzz")


def _random_ids(rng: random.Random, vocab: int, dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """(ids of a random shape, whether some lie outside [0, vocab))."""
    shape = [rng.randint(0, 5) for _ in range(rng.randint(1, 3))]
    values = [rng.randrange(vocab) for _ in range(int(torch.Size(shape).numel()))]
    high = torch.iinfo(dtype).max
    bad_choices = [
        v for v in (-1, -vocab, vocab, vocab + 7, 2**31 - 1, -(2**40)) if torch.iinfo(dtype).min <= v <= high
    ]
    if values and bad_choices and rng.random() < 0.3:
        for _ in range(rng.randint(1, 3)):
            values[rng.randrange(len(values))] = rng.choice(bad_choices)
    ids = torch.tensor(values, dtype=torch.int64).view(shape)
    bad = bool(((ids < 0) | (ids >= vocab)).any())
    return ids.to(dtype), bad


def _random_edit(rng: random.Random, table: TokenCharTable) -> bool:
    """Edit the table in place; returns whether the table stays consistent."""
    row = rng.randrange(table.vocab_size)
    kind = rng.choice(["length", "char", "length too long", "negative length", "char outside"])
    if kind == "length":
        table.lengths[row] = rng.randint(0, table.max_len)
    elif kind == "char":
        table.chars[row, rng.randrange(table.max_len)] = rng.randrange(table.n_chars)
    elif kind == "length too long":
        table.lengths[row] = table.max_len + rng.randint(1, 100)
    elif kind == "negative length":
        table.lengths[row] = -rng.randint(1, 5)
    elif table.n_chars < torch.iinfo(table.chars.dtype).max:
        table.chars[row, rng.randrange(table.max_len)] = table.n_chars
    else:
        return True
    return kind in ("length", "char")


@pytest.mark.parametrize("seed", range(CASES))
def test_fuzz_case(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    table = _random_table(rng)
    backend, mode, check_ids = rng.choice(BACKENDS), rng.choice(["train", "cached"]), rng.random() < 0.5
    dims = dict(char_dim=rng.randint(1, 6), hidden=rng.randint(1, 20))
    module = CharEmbedding(table, rng.randint(1, 6), backend=backend, check_ids=check_ids, **dims)
    module.train(mode == "train")
    ids, bad = _random_ids(rng, table.vocab_size, rng.choice(ID_DTYPES))
    what = f"seed {seed}: {backend} {mode} check_ids={check_ids} table {tuple(table.chars.shape)} ids {ids.tolist()}"
    consistent = True
    if rng.random() < 0.3:
        with torch.set_grad_enabled(mode == "train"):
            module(torch.arange(table.vocab_size))  # build the caches an edit must invalidate
        consistent = _random_edit(rng, table)
    weight = torch.randn(*ids.shape, module.d_model)
    with torch.set_grad_enabled(mode == "train"):
        if not consistent:
            with pytest.raises(ValueError, match="changed since it was built"):
                module(ids)
            return
        if bad and check_ids:
            with pytest.raises(ValueError, match="out of range"):
                module(ids)
            return
        out, grads = outputs_and_grads(module, ids, weight) if mode == "train" else (module(ids), {})
    fresh = TokenCharTable(table.chars.clone(), table.lengths.clone(), table.n_chars)
    reference = CharEmbedding(fresh, module.d_model, backend="reference", check_ids=False, **dims)
    reference.load_state_dict(module.state_dict())
    outside = (ids.long() < 0) | (ids.long() >= table.vocab_size)
    assert torch.isnan(out[outside]).all(), f"{what}: an id outside the table has a number"
    if bad:
        return
    want, want_grads = outputs_and_grads(reference, ids, weight)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: output: {m}")
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, want_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{what}: grad {name}: {m}"
        )
