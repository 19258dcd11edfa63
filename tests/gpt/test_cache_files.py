"""Cache files are checked on every read: the BPE ranks, the token ids and the token ->
char tables each record their byte count and SHA-256, so a file cut short (even at a line
end, where the old format still parsed) or altered is rebuilt with one line saying so,
never trusted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charfast import TokenCharTable
from charfast.cache import HEADER_SIZE, read_checked, write_checked
from charfast.gpt.bpe import train_bpe
from charfast.gpt.corpus import shakespeare_documents
from charfast.gpt.corpus_index import index_corpus
from charfast.gpt.token_shards import tokenize_corpus

TEXTS = [text[:20_000] for _, text in shakespeare_documents()[:2]]


def _tokens(encoding, tmp_path) -> dict[str, np.ndarray]:
    """The train and val tokens of TEXTS (a folder of two documents, one held out), cached
    under tmp_path."""
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, text in enumerate(TEXTS):
        (corpus / f"doc{i}.txt").write_text(text, encoding="utf-8")
    streams = tokenize_corpus(encoding, index_corpus(str(corpus), 0.5, seed=0), tmp_path, show_progress=False)
    return {label: np.concatenate(list(stream.chunks())) for label, stream in streams.items()}


def _only_file(folder, pattern: str):
    (path,) = folder.glob(pattern)
    return path


def _cut_at_a_line_end(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])  # the last line gone, the rest whole


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 5] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_cut_at_a_line_end, _flip_a_byte], ids=["cut at a line end", "a byte flipped"])
def test_a_damaged_bpe_rank_file_is_retrained_saying_so(tmp_path, capsys, damage):
    trained = train_bpe(TEXTS, 400, cache_dir=tmp_path)
    damage(_only_file(tmp_path, "*.tiktoken"))
    again = train_bpe(TEXTS, 400, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert again.n_vocab == trained.n_vocab == 401 and again.name == trained.name
    assert again._mergeable_ranks == trained._mergeable_ranks
    assert err.count("note: cache file") == 1 and "rebuilding it" in err
    assert "note" not in capsys.readouterr().err  # rewritten whole
    train_bpe(TEXTS, 400, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""  # rewritten whole and trusted from then on


def test_a_rank_file_of_the_old_format_is_retrained_saying_so(tmp_path, capsys):
    trained = train_bpe(TEXTS, 300, cache_dir=tmp_path)
    path = _only_file(tmp_path, "*.tiktoken")
    path.write_bytes(path.read_bytes()[HEADER_SIZE:])  # the bare tiktoken text of earlier versions
    assert train_bpe(TEXTS, 300, cache_dir=tmp_path)._mergeable_ranks == trained._mergeable_ranks
    assert "has no integrity header" in capsys.readouterr().err


@pytest.mark.parametrize("damage", [_cut_at_a_line_end, _flip_a_byte], ids=["cut short", "a byte flipped"])
def test_a_damaged_token_cache_is_rebuilt_saying_so(tmp_path, capsys, damage):
    encoding = train_bpe(TEXTS, 300, cache_dir=tmp_path)
    tokens = _tokens(encoding, tmp_path)
    damage(_only_file(tmp_path / "tokens", "train-*"))
    capsys.readouterr()
    again = _tokens(encoding, tmp_path)
    assert all(np.array_equal(again[label], tokens[label]) for label in tokens)
    assert capsys.readouterr().err.count("note: cache file") == 1


@pytest.mark.parametrize("damage", [_cut_at_a_line_end, _flip_a_byte], ids=["cut short", "a byte flipped"])
def test_a_damaged_table_cache_is_rebuilt_saying_so(tmp_path, capsys, damage):
    encoding = train_bpe(TEXTS, 300, cache_dir=tmp_path)
    table = TokenCharTable.from_tiktoken(encoding, cache_dir=tmp_path)
    damage(_only_file(tmp_path, "table-*.npz"))
    capsys.readouterr()
    again = TokenCharTable.from_tiktoken(encoding, cache_dir=tmp_path)
    assert torch.equal(again.chars, table.chars) and torch.equal(again.lengths, table.lengths)
    assert capsys.readouterr().err.count("note: cache file") == 1


def test_an_empty_payload_checks_out(tmp_path):
    write_checked(tmp_path / "empty", [], key="k")
    assert read_checked(tmp_path / "empty", key="k") == b""
    assert read_checked(tmp_path / "missing", key="k") is None


def test_a_valid_file_of_another_key_is_never_used(tmp_path, capsys):
    """A whole, checked cache file copied under another key's name (here: the val split's
    tokens where the train split's belong) is rebuilt, saying so, not used."""
    encoding = train_bpe(TEXTS, 300, cache_dir=tmp_path)
    tokens = _tokens(encoding, tmp_path)
    _only_file(tmp_path / "tokens", "train-*").write_bytes(_only_file(tmp_path / "tokens", "val-*").read_bytes())
    capsys.readouterr()
    again = _tokens(encoding, tmp_path)
    assert np.array_equal(again["train"], tokens["train"]) and not np.array_equal(again["train"], tokens["val"])
    assert "holds the content of another key" in capsys.readouterr().err
    # The same for the BPE ranks: another vocabulary's file under this one's name.
    other = train_bpe(TEXTS, 400, cache_dir=tmp_path)
    mine = _only_file(tmp_path, f"{encoding.name}.tiktoken")
    mine.write_bytes(_only_file(tmp_path, f"{other.name}.tiktoken").read_bytes())
    assert train_bpe(TEXTS, 300, cache_dir=tmp_path)._mergeable_ranks == encoding._mergeable_ranks
    assert "holds the content of another key" in capsys.readouterr().err
    payload = b"x"
    write_checked(tmp_path / "file", [payload], key="one")
    assert read_checked(tmp_path / "file", key="one") == payload and read_checked(tmp_path / "file", key="two") is None
