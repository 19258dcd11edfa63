"""Training data: the corpus index and its split by document, the token shards (cached,
parallel, resumable) and the batches drawn across them."""

import hashlib

import numpy as np
import pytest
import torch

from charfast.gpt import sources, token_shards
from charfast.gpt.bpe import END_OF_TEXT
from charfast.gpt.corpus_index import corpus_digest, held_out_indices, index_corpus
from charfast.gpt.data import TokenBatches
from charfast.gpt.sources import corpus_pieces
from charfast.gpt.token_shards import TokenStream, tokenize_corpus
from charfast.gpt.tokenizer import get_tokenizer


def _all(stream: TokenStream) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.int64), *stream.chunks()]).astype(np.int64)


def test_the_embedded_corpus_reads_and_splits_as_every_earlier_run_did():
    """Pinned from the list-based reader this streaming one replaced: the digest checkpoints
    record and the held-out plays of the default run (seed 1337), so old runs resume and old
    study folders are reused."""
    index = index_corpus(None, 0.1, seed=1337)
    assert index.n_documents == 38
    assert index.sha256 == "93c6494c85a39c5bddd32d19b39e57dfccf135085fdb37f9eb37efde63eb16eb"
    assert corpus_digest(None) == index.sha256
    val = [name for name, _ in index.split_documents(val=True)]
    assert val == ["henry-vi-part-1", "measure-for-measure", "coriolanus", "a-winter-s-tale"]
    assert len(list(index.split_documents(val=False))) == 34


def test_documents_split_by_document(tiny_corpus):
    index = index_corpus(str(tiny_corpus), 0.25, seed=3)
    assert index.n_documents == 4
    train = [name for name, _ in index.split_documents(val=False)]
    val = [name for name, _ in index.split_documents(val=True)]
    assert len(val) == 1 and len(train) == 3 and set(train).isdisjoint(val)
    assert index_corpus(str(tiny_corpus), 0.25, seed=3).held_out.tolist() == index.held_out.tolist()
    assert np.array_equal(held_out_indices(1000, 0.1, seed=5), held_out_indices(1000, 0.1, seed=5))
    assert len(held_out_indices(1000, 0.1, seed=5)) == 100 and len(held_out_indices(2, 0.01, seed=0)) == 1
    assert len(held_out_indices(2, 0.99, seed=0)) == 1  # one document is always left to train on
    with pytest.raises(ValueError, match="at least 2 documents"):
        held_out_indices(1, 0.1, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        index_corpus(str(tiny_corpus), 1.5, seed=0)


def test_a_single_file_is_cut_into_documents_at_the_lines_splitlines_cuts(tiny_corpus, tmp_path):
    path = next(tiny_corpus.iterdir())
    docs = list(corpus_pieces(path)[0].documents())
    assert len(docs) > 10
    assert "".join(text for _, text in docs) == path.read_text(encoding="utf-8")
    odd = tmp_path / "odd.txt"  # CR, CRLF, form feed and U+2028 end lines too; only the first BOM goes
    odd.write_bytes("\ufeffa\r\nb\rc\x0cd\u2028e\nf\n".encode() * 10)
    text = "\ufeff".join(["a\nb\nc\x0cd\u2028e\nf\n"] * 10).removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    docs = list(corpus_pieces(odd)[0].documents())
    assert [t for _, t in docs] == lines[: len(docs)] and len(docs) == len(lines) == 60  # 60 lines: one each
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        corpus_pieces(tiny_corpus / "missing")


def test_text_files_are_grouped_into_pieces_whose_shards_read_as_one_stream(tiny_corpus, tiny_cache, monkeypatch):
    encoding = get_tokenizer("bpe:300", lambda: [t for p in corpus_pieces(tiny_corpus) for _, t in p.documents()])
    whole = index_corpus(str(tiny_corpus), 0.25, seed=1)
    monkeypatch.setattr(sources, "PIECE_BYTES", 1)  # one file per piece
    apart = index_corpus(str(tiny_corpus), 0.25, seed=1)
    assert (len(whole.pieces), len(apart.pieces)) == (1, 4)
    assert apart.sha256 == whole.sha256 and apart.held_out.tolist() == whole.held_out.tolist()
    one = tokenize_corpus(encoding, whole, tiny_cache, show_progress=False)
    four = tokenize_corpus(encoding, apart, tiny_cache, workers=2, show_progress=False)
    assert len(four["train"].shards) == 3 and len(four["val"].shards) == 1
    eot = encoding.encode_single_token(END_OF_TEXT)
    for label in ("train", "val"):
        tokens = _all(one[label])
        assert np.array_equal(_all(four[label]), tokens)
        texts = "".join(whole.texts(val=label == "val"))
        assert encoding.decode(tokens[tokens != eot].tolist()) == texts
        assert (tokens == eot).sum() == len(list(whole.split_documents(val=label == "val")))  # one after each
    # Batches drawn across the shard ends are those of the concatenated tokens.
    joined = TokenBatches(_all(one["train"]), block_size=64, batch_size=16, seed=2)
    sharded = TokenBatches(four["train"], block_size=64, batch_size=16, seed=2)
    for i in range(20):
        assert all(torch.equal(a, b) for a, b in zip(joined.batch(i), sharded.batch(i)))


def test_shards_are_written_once_and_an_interrupted_tokenization_resumes_with_those_it_finished(
    tiny_corpus, tmp_path, monkeypatch
):
    monkeypatch.setattr(sources, "PIECE_BYTES", 1)
    index = index_corpus(str(tiny_corpus), 0.25, seed=1)
    encoding = get_tokenizer("bpe:300", lambda: index.texts(val=False), cache_dir=tmp_path)
    calls = []
    real = token_shards._Encoder.__call__

    def stop_in_the_third_piece(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, texts)

    with monkeypatch.context() as patch:
        patch.setattr(token_shards._Encoder, "__call__", stop_in_the_third_piece)
        with pytest.raises(KeyboardInterrupt):
            tokenize_corpus(encoding, index, tmp_path, show_progress=False)
    written = sorted((tmp_path / "tokens").iterdir())
    assert len(written) == 4 and not any(p.name.startswith(".") for p in written)  # 2 pieces x (train, val), no temp
    stamps = {p: p.stat().st_mtime_ns for p in written}
    encoded = []
    monkeypatch.setattr(
        token_shards._Encoder, "__call__", lambda self, texts: encoded.append(texts) or real(self, texts)
    )
    tokens = tokenize_corpus(encoding, index, tmp_path, show_progress=False)
    assert len(encoded) == 2  # only the two pieces not finished
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert len(list((tmp_path / "tokens").iterdir())) == 8
    assert tokenize_corpus(encoding, index, tmp_path, show_progress=False)["train"].shards[0].filename
    assert len(encoded) == 2 and len(tokens["train"]) + len(tokens["val"]) > 0


def test_one_or_several_workers_make_the_same_shards(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    text = "".join(f"line {i} of many, with words\n" for i in range(40_000))  # over one batch of BATCH_CHARS
    (folder / "big.txt").write_text(text, encoding="utf-8")
    (folder / "small.txt").write_text("a short one\n", encoding="utf-8")
    index = index_corpus(str(folder), 0.5, seed=0)
    encoding = get_tokenizer("cl100k_base", tuple)
    one = tokenize_corpus(encoding, index, tmp_path / "one", workers=1, show_progress=False)
    two = tokenize_corpus(encoding, index, tmp_path / "two", workers=2, show_progress=False)
    assert all(np.array_equal(_all(one[label]), _all(two[label])) for label in ("train", "val"))
    for label in ("train", "val"):
        expected = [t for doc in index.texts(val=label == "val") for t in encoding.encode_ordinary(doc) + [100257]]
        assert _all(one[label]).tolist() == expected


def test_a_read_only_cache_keeps_the_tokens_in_memory_saying_so(tiny_corpus, tmp_path, monkeypatch, capsys):
    index = index_corpus(str(tiny_corpus), 0.25, seed=1)
    encoding = get_tokenizer("bpe:300", lambda: index.texts(val=False), cache_dir=tmp_path)
    cached = tokenize_corpus(encoding, index, tmp_path, show_progress=False)
    (tmp_path / "blocked").write_text("a file where the cache's folder would be")
    kept = tokenize_corpus(encoding, index, tmp_path / "blocked", show_progress=False)
    assert "keeping the tokens in memory" in capsys.readouterr().out
    assert all(np.array_equal(_all(kept[label]), _all(cached[label])) for label in ("train", "val"))


def test_token_stream_windows_cross_shard_ends():
    parts = [np.arange(0, 5, dtype=np.uint16), np.zeros(0, np.uint16), np.arange(5, 7, dtype=np.uint16)]
    stream = TokenStream([*parts, np.arange(7, 20, dtype=np.uint16)])
    assert len(stream) == 20
    for start in range(20):
        for length in range(0, 21 - start):
            assert stream.window(start, length).tolist() == list(range(start, start + length))
    with pytest.raises(IndexError, match="outside the 20 tokens"):
        stream.window(15, 6)
    assert (
        hashlib.sha256(np.concatenate(list(stream.chunks(size=3))).tobytes()).digest()
        == hashlib.sha256(np.arange(20, dtype=np.uint16).tobytes()).digest()
    )


def test_batches_are_counter_based_and_sharded():
    tokens = np.arange(1000, dtype=np.uint16)
    whole = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    shards = [TokenBatches(tokens, block_size=8, batch_size=3, seed=5, rank=r, world_size=2) for r in range(2)]
    x, y = whole.batch(7)
    assert x.shape == (6, 8) and x.dtype == torch.int64
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    assert torch.equal(torch.cat([s.batch(7)[0] for s in shards]), x)  # the ranks split the global batch
    first = [whole.next()[0] for _ in range(3)]
    resumed = TokenBatches(tokens, block_size=8, batch_size=6, seed=5)
    resumed.load_state_dict({"position": 2, "seed": 5})
    assert torch.equal(resumed.next()[0], first[2])
    with pytest.raises(ValueError, match="fewer than block_size"):
        TokenBatches(tokens[:8], block_size=8, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        resumed.load_state_dict({"position": 2, "seed": 6})
