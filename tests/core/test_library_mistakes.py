"""Mistakes a user of the library makes get an error naming the argument and what was
expected, never a silent wrong value."""

import math

import pytest
import torch
from backend_cases import random_table

from charfast import CharEmbedding, TokenCharTable


def _char_embedding(**kwargs):
    return CharEmbedding(random_table(10, 4, 5), 8, char_dim=4, hidden=4, **kwargs)


MISTAKES = [
    (
        "forget_bias nan",
        lambda: _char_embedding(forget_bias=math.nan),
        ValueError,
        "forget_bias must be a finite number",
    ),
    (
        "forget_bias inf",
        lambda: _char_embedding(forget_bias=math.inf),
        ValueError,
        "forget_bias must be a finite number",
    ),
    ("forget_bias str", lambda: _char_embedding(forget_bias="1"), ValueError, "forget_bias must be a finite number"),
    ("inference_cache str", lambda: _char_embedding(inference_cache="yes"), TypeError, "inference_cache must be True"),
    ("check_ids str", lambda: _char_embedding(check_ids="yes"), TypeError, "check_ids must be True or False"),
    ("backend not a str", lambda: _char_embedding(backend=None), TypeError, "backend must be a string"),
    (
        "hidden 0",
        lambda: CharEmbedding(random_table(10, 4, 5), 8, hidden=0),
        ValueError,
        "hidden must be a positive int",
    ),
    ("table not a table", lambda: CharEmbedding("cl100k", 8), TypeError, "table must be a TokenCharTable"),
    ("chars of str", lambda: TokenCharTable(["ab", "cd"], [2, 2], 256), TypeError, "chars must be an integer tensor"),
    ("lengths of str", lambda: TokenCharTable([[1], [2]], ["1", "1"], 256), TypeError, "lengths must be an integer"),
    ("chars float", lambda: TokenCharTable(torch.zeros(2, 2), [1, 1], 5), TypeError, "chars must be an integer tensor"),
    ("n_chars bool", lambda: TokenCharTable([[1]], [1], True), ValueError, "n_chars must be a positive int"),
    ("char id >= n_chars", lambda: TokenCharTable([[7]], [1], 5), ValueError, r"char ids must lie in \[0, 5\)"),
    (
        "token_text -1",
        lambda: random_table(10, 4, 5).token_text(-1),
        ValueError,
        r"token_id must be an int in \[0, 10\)",
    ),
    (
        "token_text V",
        lambda: random_table(10, 4, 5).token_text(10),
        ValueError,
        r"token_id must be an int in \[0, 10\)",
    ),
    ("token_text bool", lambda: random_table(10, 4, 5).token_text(True), ValueError, "token_id must be an int"),
    (
        "from_tiktoken name",
        lambda: TokenCharTable.from_tiktoken("cl100k_base"),
        TypeError,
        "encoding must be a tiktoken.Encoding",
    ),
    ("idx float", lambda: _char_embedding(backend="reference")(torch.zeros(3)), TypeError, "integer token ids"),
    (
        "idx out of range",
        lambda: _char_embedding(backend="reference")(torch.tensor([10])),
        ValueError,
        r"token id 10 is out of range \[0, 10\)",
    ),
]


@pytest.mark.parametrize("make, error, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_max_chars_takes_a_positive_int_only(cl100k):
    for bad in (True, 0, -1, 2.5, "8"):
        with pytest.raises(ValueError, match="max_chars must be a positive int or None"):
            TokenCharTable.from_tiktoken(cl100k, max_chars=bad)
