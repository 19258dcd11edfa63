"""A table is an input of the function: every change to it (assigning a new table to the
module, assigning or editing chars / lengths in place) reaches every backend and the
inference cache, and a table made inconsistent is refused before any kernel reads it."""

import pytest
import torch
from backend_cases import needs_interpreter

from charfast import CharEmbedding, TokenCharTable

BACKENDS = [
    "reference",
    pytest.param("cpp", marks=pytest.mark.cpp),
    pytest.param("triton", marks=needs_interpreter),
]
MODES = ["train", "cached"]  # train mode with grad; eval under no_grad (the inference cache)


def _table(seed: int, vocab: int = 24, width: int = 6, n_chars: int = 9) -> TokenCharTable:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, width + 1, (vocab,), generator=g)
    lengths[:2] = torch.tensor([0, width])
    return TokenCharTable(torch.randint(0, n_chars, (vocab, width), generator=g), lengths, n_chars)


def _run(module: CharEmbedding, idx: torch.Tensor, mode: str) -> torch.Tensor:
    module.train(mode == "train")
    with torch.set_grad_enabled(mode == "train"):
        return module(idx).detach()


def _expected(module: CharEmbedding, chars, lengths, idx) -> torch.Tensor:
    """The reference on a fresh table with these contents and the module's weights."""
    fresh = TokenCharTable(chars.clone(), lengths.clone(), module.table.n_chars)
    ref = CharEmbedding(fresh, module.d_model, char_dim=6, hidden=10, backend="reference")
    ref.load_state_dict(module.state_dict())
    with torch.no_grad():
        return ref(idx)


def _module(backend: str, table: TokenCharTable) -> CharEmbedding:
    return CharEmbedding(table, 12, char_dim=6, hidden=10, backend=backend)


CHANGES = {
    "assign a new table": lambda m, other: setattr(m, "table", other),
    "edit chars in place": lambda m, other: m.table.chars.copy_(other.chars),
    "edit lengths in place": lambda m, other: m.table.lengths.copy_(other.lengths),
    "edit one char in place": lambda m, other: m.table.chars[1].__setitem__(0, (int(m.table.chars[1, 0]) + 1) % 9),
    "assign chars": lambda m, other: setattr(m.table, "chars", other.chars.clone()),
    "assign lengths": lambda m, other: setattr(m.table, "lengths", other.lengths.clone()),
    "every token at the longest length": lambda m, other: m.table.lengths.fill_(m.table.max_len),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", CHANGES)
def test_every_change_of_the_table_reaches_the_output(backend, mode, change):
    module = _module(backend, _table(1))
    idx = torch.arange(24).view(2, 12)
    before = _run(module, idx, mode)  # builds the trie, device copies, the cache
    CHANGES[change](module, _table(2))
    after = _run(module, idx, mode)
    want = _expected(module, module.table.chars, module.table.lengths, idx)
    assert not torch.allclose(before, want), "the change must change the function, or the test proves nothing"
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.lengths.__setitem__(3, t.max_len + 1), r"lengths must lie in \[0, 6\].*token 3 has length 7"),
        (lambda t: t.lengths.__setitem__(4, -1), r"token 4 has length -1"),
        (lambda t: t.chars.__setitem__((5, 5), 200), r"char ids must lie in \[0, 9\)"),
        (lambda t: setattr(t, "lengths", torch.zeros(7, dtype=torch.int32)), "one entry per token"),
        (lambda t: setattr(t, "chars", torch.zeros(0, 6, dtype=torch.int32)), "one entry per token"),
    ],
    ids=["too long", "negative length", "char outside the alphabet", "fewer lengths", "no rows"],
)
def test_a_table_made_inconsistent_is_refused_before_any_kernel(backend, edit, message):
    module = _module(backend, _table(1))
    idx = torch.arange(24)
    module(idx)
    edit(module.table)
    for mode in MODES:
        with pytest.raises(ValueError, match=message) as caught:
            _run(module, idx, mode)
        assert "changed since it was built" in str(caught.value)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (torch.zeros(3), ValueError, "chars must be 2-D"),
        (torch.zeros(3, 2), TypeError, "chars must be an integer tensor"),
        ("abc", TypeError, "chars must be an integer tensor or array"),
    ],
)
def test_assigning_chars_that_are_not_a_table_is_refused_at_once(value, error, message):
    table = _table(1)
    with pytest.raises(error, match=message):
        table.chars = value


def test_the_version_moves_only_when_the_contents_do():
    table = _table(1)
    first = table.version
    assert table.version == first
    table.lengths[0] = 3
    assert table.version == first + 1 == table.version
    table.chars = table.chars.clone()  # another tensor with the same values is still a change
    assert table.version == first + 2


def test_module_table_must_stay_a_table():
    module = _module("reference", _table(1))
    with pytest.raises(TypeError, match="table must be a TokenCharTable"):
        module.table = "cl100k"


def test_most_chars_and_device_copies_follow_an_edit():
    table = _table(1)
    assert table.most_chars(1) == 6
    table.lengths.fill_(0)
    assert table.most_chars(24) == 0
    copy = table.on("meta")[1]
    table.lengths[0] = 2
    assert table.on("meta")[1] is not copy
