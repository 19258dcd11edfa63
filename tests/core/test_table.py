import io

import numpy as np
import pytest
import torch

from charfast import TokenCharTable
from charfast.cache import HEADER_SIZE, write_checked


def test_cl100k_tokens_are_their_utf8_bytes(cl100k, cl100k_table):
    assert cl100k_table.vocab_size == cl100k.n_vocab
    assert cl100k_table.n_chars == 256 and cl100k_table.chars.dtype == torch.uint8
    (strawberry,) = cl100k.encode(" strawberry")
    assert cl100k_table.token_text(strawberry) == b" strawberry"
    pieces = cl100k.encode("strawberry")
    assert [cl100k_table.token_text(t) for t in pieces] == [b"str", b"aw", b"berry"]
    # Non-ASCII text: a token holds UTF-8 bytes, not code points.
    for t in cl100k.encode("naïve café"):
        assert cl100k_table.token_text(t) == cl100k.decode_single_token_bytes(t)


def test_cl100k_is_not_truncated(cl100k, cl100k_table):
    longest = max(range(cl100k.n_vocab), key=lambda i: int(cl100k_table.lengths[i]))
    assert cl100k_table.max_len == 128 == int(cl100k_table.lengths[longest])
    assert cl100k_table.token_text(longest) == cl100k.decode_single_token_bytes(longest)


def test_special_tokens_and_unused_ids_have_no_chars(cl100k, cl100k_table):
    eot = cl100k.encode_single_token("<|endoftext|>")
    assert int(cl100k_table.lengths[eot]) == 0
    unused = 100261  # cl100k leaves 100261..100275 unassigned
    with pytest.raises(KeyError):
        cl100k.decode_single_token_bytes(unused)
    assert int(cl100k_table.lengths[unused]) == 0
    assert int(cl100k_table.chars[eot].abs().sum()) == 0


def test_max_chars_is_an_explicit_cap(cl100k, tmp_path):
    capped = TokenCharTable.from_tiktoken(cl100k, max_chars=8, cache_dir=tmp_path)
    (strawberry,) = cl100k.encode(" strawberry")
    assert capped.max_len == 8
    assert capped.token_text(strawberry) == b" strawbe"
    assert "[:8]" in capped.name
    with pytest.raises(ValueError, match="max_chars"):
        TokenCharTable.from_tiktoken(cl100k, max_chars=0, cache_dir=tmp_path)


def test_disk_cache_round_trip(cl100k, cl100k_table, tmp_path):
    first = TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("table-*.npz")
    assert torch.equal(first.chars, cl100k_table.chars) and torch.equal(first.lengths, cl100k_table.lengths)
    # Prove the second build reads the file: a marker written into it comes back.
    saved = _read_cached_npz(cached)
    chars, lengths, key = saved["chars"], saved["lengths"], saved["key"]
    assert int(lengths[0]) >= 1
    chars[0, 0] = 77
    _write_cached_npz(cached, str(key), chars=chars, lengths=lengths, key=key)  # a well-formed file, checks and all
    second = TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    assert int(second.chars[0, 0]) == 77
    # A different cap is a different key, so it never reads that file.
    assert len({p.name for p in tmp_path.glob("table-*.npz")}) == 1
    TokenCharTable.from_tiktoken(cl100k, max_chars=4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("table-*.npz"))) == 2


def _read_cached_npz(path) -> dict:
    """The arrays of a table cache file (an .npz behind charfast.cache's integrity header)."""
    with np.load(io.BytesIO(path.read_bytes()[HEADER_SIZE:])) as saved:
        return {name: saved[name].copy() for name in saved.files}


def _write_cached_npz(path, header_key: str, **arrays) -> None:
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    write_checked(path, [payload.getvalue()], key=header_key)


def test_torn_cache_file_is_rebuilt(cl100k, cl100k_table, tmp_path):
    TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("table-*.npz")
    cached.write_bytes(b"not a zip file")
    rebuilt = TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    assert torch.equal(rebuilt.chars, cl100k_table.chars)


@pytest.mark.parametrize("damage", ["ten-rows", "other-lengths", "other-key", "no-key"])
def test_a_cache_file_that_does_not_fit_is_rebuilt(cl100k, cl100k_table, tmp_path, damage):
    TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("table-*.npz")
    arrays = _read_cached_npz(cached)
    header_key = str(arrays["key"])  # the file's own check passes: the payload's key and lengths decide
    if damage == "ten-rows":  # well-formed, but a table of 10 ids for cl100k's 100,277
        arrays["chars"], arrays["lengths"] = arrays["chars"][:10], arrays["lengths"][:10]
    elif damage == "other-lengths":
        arrays["lengths"][5] += 1
    elif damage == "other-key":
        arrays["key"] = np.array("0" * 64)
    else:
        del arrays["key"]
    _write_cached_npz(cached, header_key, **arrays)
    rebuilt = TokenCharTable.from_tiktoken(cl100k, cache_dir=tmp_path)
    assert torch.equal(rebuilt.chars, cl100k_table.chars) and torch.equal(rebuilt.lengths, cl100k_table.lengths)
    assert _read_cached_npz(cached)["chars"].shape == tuple(cl100k_table.chars.shape)  # and the file was repaired


def test_explicit_table_is_stored_compactly():
    chars = torch.tensor([[3, 1, 9], [2, 0, 0], [0, 0, 0]])
    table = TokenCharTable(chars, torch.tensor([2, 1, 0]), n_chars=300)
    assert table.chars.dtype == torch.int16 and table.lengths.dtype == torch.int32
    assert table.chars.tolist() == [[3, 1, 0], [2, 0, 0], [0, 0, 0]]  # zeros past each end
    assert TokenCharTable(chars, torch.tensor([3, 1, 0]), n_chars=10).chars.dtype == torch.uint8
    assert TokenCharTable(chars, torch.tensor([3, 1, 0]), n_chars=70000).chars.dtype == torch.int32


def test_device_copy_is_cached():
    table = TokenCharTable(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), 3)
    first = table.on("meta")
    assert first[0].device.type == "meta"
    assert table.on("meta")[0] is first[0]
    assert table.on("cpu")[0] is table.chars


@pytest.mark.parametrize(
    "chars, lengths, n_chars, error, match",
    [
        (torch.zeros(3), torch.zeros(3), 4, ValueError, "2-D"),
        (torch.zeros(3, 2), torch.zeros(3), 4, TypeError, "integer"),
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 4, ValueError, "one entry per token"),
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3), 4, TypeError, "lengths must be an integer"),
        (torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 3, 1]), 4, ValueError, r"token 1 has length 3"),
        (torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, -1, 1]), 4, ValueError, r"lengths must lie in \[0, 2\]"),
        (torch.tensor([[0, 5], [1, 1]]), torch.tensor([2, 1]), 4, ValueError, r"char ids must lie in \[0, 4\)"),
        (torch.tensor([[0, -2], [1, 1]]), torch.tensor([2, 1]), 4, ValueError, r"found -2\.\.1"),
        (torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4, ValueError, "at least one token"),
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), 0, ValueError, "n_chars"),
    ],
)
def test_bad_tables_are_rejected(chars, lengths, n_chars, error, match):
    with pytest.raises(error, match=match):
        TokenCharTable(chars, lengths, n_chars)


def test_chars_past_a_tokens_end_may_be_anything():
    # Padding beyond the length is ignored, even out-of-alphabet values.
    table = TokenCharTable(torch.tensor([[1, 99]]), torch.tensor([1]), n_chars=2)
    assert table.chars.tolist() == [[1, 0]]


def test_from_tiktoken_wants_an_encoding_not_a_name():
    with pytest.raises(TypeError, match=r"must be a tiktoken.Encoding .* got str 'cl100k_base'"):
        TokenCharTable.from_tiktoken("cl100k_base")


def test_a_shuffled_table_gives_each_token_another_tokens_chars(cl100k_table):
    table = cl100k_table
    shuffled = table.shuffled(0)
    assert shuffled.vocab_size == table.vocab_size and shuffled.n_chars == table.n_chars
    # The lengths, and the rows themselves, are the same multiset: only who gets which moved.
    assert sorted(shuffled.lengths.tolist()) == sorted(table.lengths.tolist())
    assert sorted(shuffled.token_text(i) for i in range(shuffled.vocab_size)) == sorted(
        table.token_text(i) for i in range(table.vocab_size)
    )
    moved = sum(shuffled.token_text(i) != table.token_text(i) for i in range(0, table.vocab_size, 7))
    assert moved > 0.99 * len(range(0, table.vocab_size, 7))
    # A fixed permutation: the same seed gives the same table, another seed another one.
    assert torch.equal(table.shuffled(0).chars, shuffled.chars)
    assert not torch.equal(table.shuffled(1).chars, shuffled.chars)
    assert "shuffled0" in shuffled.name


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_shuffled_wants_a_seed(cl100k_table, seed):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        cl100k_table.shuffled(seed)


def test_padded_takes_a_models_rounding_up_and_refuses_more_unless_asked():
    table = TokenCharTable(torch.randint(0, 5, (300, 4)), torch.randint(0, 5, (300,)), 5, name="t300")
    assert table.padded(300) is table
    rounded = table.padded(320)  # a model rounding its vocabulary up to a multiple of 64
    assert rounded.vocab_size == 320 and int(rounded.lengths[300:].sum()) == 0
    assert torch.equal(rounded.chars[:300], table.chars)
    assert table.padded(300 + 1023).vocab_size == 1323  # any rounding up adds fewer than 1024 ids
    with pytest.raises(ValueError, match=r"the table 't300' covers 300 ids and the model 1324: 1024 ids without"):
        table.padded(1324)
    with pytest.raises(ValueError, match=r"'t300' \(MY_SETTING\) covers 300 ids and the model 50000"):
        table.padded(50_000, named_by="MY_SETTING")
    assert table.padded(50_000, allow=49_700).vocab_size == 50_000  # asked for explicitly
